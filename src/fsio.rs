//! Durable writes. Every file and directory the library writes for a user (models, tokenizers,
//! checkpoints, search and pipeline outputs) goes through here, so a crash or a full disk never
//! leaves a half-written file where a complete one was, and a finished write survives a power loss.
//!
//! A file is written to a hidden temporary sibling, fsynced, renamed over its target, and the
//! directory fsynced (so the rename itself is durable). A directory is filled as a temporary
//! sibling and swapped in with two renames ([`write_dir_atomic`]).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Writes `bytes` to `path` atomically and durably: a reader sees either the previous file or the
/// complete new one. The temporary file is `.{name}.tmp{pid}` in the same directory (same file
/// system, so the rename is atomic) and is removed when any step fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().ok_or_else(|| Error::invalid("write_atomic", format!("{} has no file name", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    if let Err(e) = write_file_synced(&tmp, bytes).and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::io(path, e))) {
        // Best effort: do not leave the temporary behind; the original error is what matters,
        // reported against the file the caller asked for (the temporary's name means nothing to them).
        let _ = fs::remove_file(&tmp);
        return Err(match e {
            Error::Io { source, .. } => Error::io(path, source),
            other => other,
        });
    }
    fsync_dir(parent_of(path))
}

/// The metadata of `path`, or `None` when nothing is there. Any other failure to look (a
/// directory on the way that may not be searched) is an I/O error naming `path`:
/// `Path::exists` and `Path::is_file` would call that "missing" and send the user looking for a
/// file that is there.
pub fn metadata_if_exists(path: &Path) -> Result<Option<fs::Metadata>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m)),
        // ENOTDIR: a file stands where a directory on the way should be, so nothing is there.
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Checks, before any long computation, that [`write_atomic`] could create `path` later: its
/// directory exists and `path` is not a directory. `what` names the option in the error.
pub fn check_output_file(path: &Path, what: &'static str) -> Result<()> {
    let dir = parent_of(path);
    if !dir.is_dir() {
        return Err(Error::invalid(what, format!("{}: the directory {} does not exist", path.display(), dir.display())));
    }
    if path.is_dir() {
        return Err(Error::invalid(what, format!("{} is a directory", path.display())));
    }
    Ok(())
}

/// Checks, before any long computation, that [`write_atomic_creating_dir`] could write `path`
/// later: `path` is not a directory, and the nearest part of its directory that exists is a
/// directory (the OS would say only "File exists" when a file stands where a directory must be
/// created). `what` names the option in the error.
pub fn check_creatable_file(path: &Path, what: &'static str) -> Result<()> {
    if metadata_if_exists(path)?.is_some_and(|m| m.is_dir()) {
        return Err(Error::invalid(what, format!("{} is a directory", path.display())));
    }
    check_ancestors_are_dirs(parent_of(path), path, what)
}

/// `dir`, or the nearest ancestor of it that exists, is a directory; `path` (what will be written
/// there) and `what` name the error.
fn check_ancestors_are_dirs(dir: &Path, path: &Path, what: &'static str) -> Result<()> {
    for ancestor in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        if let Some(m) = metadata_if_exists(ancestor)? {
            if !m.is_dir() {
                return Err(Error::invalid(
                    what,
                    format!("{}: {} is a file, where a directory would have to be", path.display(), ancestor.display()),
                ));
            }
            break;
        }
    }
    Ok(())
}

/// Where `path` resolves to (links and `..` followed, for a file that may not exist yet through
/// its directory); `None` when its directory does not exist.
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = fs::canonicalize(path) {
        return Some(p);
    }
    Some(fs::canonicalize(parent_of(path)).ok()?.join(path.file_name()?))
}

/// Refuses, before any work, an output that is one of the command's inputs (writing it would
/// replace a file the user wrote, and one the run just read) or the same file as an earlier
/// output (one would replace the other). Each entry is (the option, its path).
pub fn check_distinct_outputs(outputs: &[(&'static str, &Path)], inputs: &[(&'static str, &Path)]) -> Result<()> {
    for (i, &(what, out)) in outputs.iter().enumerate() {
        let Some(o) = resolved(out) else { continue };
        for &(input_what, input) in inputs {
            if resolved(input).as_ref() == Some(&o) {
                return Err(Error::invalid(
                    what,
                    format!("{} is also the input {input_what}: writing it would replace that input", out.display()),
                ));
            }
        }
        for &(other_what, other) in &outputs[..i] {
            if resolved(other).as_ref() == Some(&o) {
                return Err(Error::invalid(what, format!("{} is also {other_what}: one output would replace the other", out.display())));
            }
        }
    }
    Ok(())
}

/// [`write_atomic`], creating the file's directory first.
pub fn write_atomic_creating_dir(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_of(path);
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomic(path, bytes)
}

/// Creates an output directory (and its parents) that may exist already; a file in its place is an
/// error saying so (the OS's "File exists" does not).
pub fn create_output_dir(dir: &Path) -> Result<()> {
    check_output_dir(dir)?;
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// The check of [`create_output_dir`] without creating anything: `dir` is a directory or absent.
pub fn check_output_dir(dir: &Path) -> Result<()> {
    match metadata_if_exists(dir)? {
        Some(m) if !m.is_dir() => Err(Error::invalid("output directory", format!("{} exists and is not a directory", dir.display()))),
        Some(_) => Ok(()),
        None => check_ancestors_are_dirs(dir, dir, "output directory"),
    }
}

/// Creates the directory `target` atomically: `fill` writes the contents into a fresh temporary
/// sibling directory, which is fsynced and renamed over `target` (the previous `target`, if any,
/// stays until the rename succeeded). When `fill` or any step fails, `target` is left as it was
/// and the temporary directory is removed. A crash between the two renames leaves only
/// `{target}.old`, which readers of checkpoints fall back to.
pub fn write_dir_atomic(target: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = parent_of(target);
    fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = sibling(target, "tmp");
    let old = sibling(target, "old");
    // Left over from a crash during an earlier save; never the only copy of anything.
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = fill(&tmp).and_then(|()| fsync_dir(&tmp)) {
        let _ = fs::remove_dir_all(&tmp);
        // Named by where the file was going (the temporary directory is gone), saying that the
        // previous contents are intact.
        return Err(match e {
            Error::Io { path, source } => {
                let file = path.strip_prefix(&tmp).map(|rest| target.join(rest)).unwrap_or(path);
                let kept = if target.exists() { "; the previous version is unchanged" } else { "" };
                Error::Io {
                    path: file,
                    source: std::io::Error::new(source.kind(), format!("{source} (while writing {}{kept})", target.display())),
                }
            }
            e => e,
        });
    }
    if target.exists() {
        // With `target` present, an `.old` is the leftover of a save that completed but crashed
        // before its cleanup.
        if old.exists() {
            fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        }
        fs::rename(target, &old).map_err(|e| Error::io(target, e))?;
    }
    fs::rename(&tmp, target).map_err(|e| Error::io(target, e))?;
    fsync_dir(parent)?;
    if old.exists() {
        // The new directory is durable; a failure to delete the old one only costs disk space.
        let _ = fs::remove_dir_all(&old);
    }
    Ok(())
}

/// Writes a new file and fsyncs it (no rename: for files inside a directory that
/// [`write_dir_atomic`] swaps in as a whole).
pub fn write_file_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

/// `{path}.{suffix}` next to `path`.
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{suffix}"));
    path.with_file_name(name)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a directory's entries (new files, renames) durable. Directories cannot be opened for
/// syncing on every platform; there the rename's own guarantees are all we get.
fn fsync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let f = fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
        f.sync_all().map_err(|e| Error::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_checks_name_a_file_in_the_way_and_outputs_that_are_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        fs::write(&file, b"mine").unwrap();
        // A file where a directory would have to be created, at any depth.
        for out in [file.join("ds.json"), file.join("a/b/ds.json")] {
            let e = check_creatable_file(&out, "--out").unwrap_err().to_string();
            assert!(e.contains("--out") && e.contains("notes.txt is a file"), "{e}");
            let e = check_output_dir(&out).unwrap_err().to_string();
            assert!(e.contains("notes.txt is a file"), "{e}");
        }
        let e = check_creatable_file(dir.path(), "--out").unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        check_creatable_file(&dir.path().join("new/deeper/ds.json"), "--out").unwrap();
        check_output_dir(&dir.path().join("new/deeper")).unwrap();

        // The same file spelt two ways is refused as an output of it; a new file is not.
        let other_spelling = dir.path().join("sub/../notes.txt");
        fs::create_dir(dir.path().join("sub")).unwrap();
        let e = check_distinct_outputs(&[("--json", &other_spelling)], &[("--ref", &file)]).unwrap_err().to_string();
        assert!(e.contains("--json") && e.contains("the input --ref"), "{e}");
        let fresh = dir.path().join("scores.json");
        check_distinct_outputs(&[("--json", &fresh)], &[("--ref", &file)]).unwrap();
        // Two outputs naming one file, even one that does not exist yet.
        let e = check_distinct_outputs(&[("--hyp-out", &fresh), ("--json", &dir.path().join("sub/../scores.json"))], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--json") && e.contains("also --hyp-out"), "{e}");
        assert_eq!(fs::read(&file).unwrap(), b"mine");
    }

    #[test]
    fn write_atomic_replaces_whole_files_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"kept").unwrap();
        // The target is now a non-empty directory: the rename fails after the temporary is written.
        let blocked = dir.path().join("b");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), b"x").unwrap();
        let e = write_atomic(&blocked, b"lost").unwrap_err().to_string();
        assert!(e.starts_with(&blocked.display().to_string()), "{e}");
        let missing_dir = dir.path().join("no/such/out.txt");
        let e = write_atomic(&missing_dir, b"x").unwrap_err().to_string();
        assert!(e.starts_with(&missing_dir.display().to_string()), "errors name the target, not the temporary: {e}");
        assert_eq!(fs::read(&path).unwrap(), b"kept");
        assert!(!dir.path().join(".b.tmp".to_string() + &std::process::id().to_string()).exists());
        assert!(write_atomic(Path::new("/"), b"x").is_err(), "a path without a file name is an error");
    }

    #[test]
    fn an_output_dir_where_a_file_is_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let e = create_output_dir(&file).unwrap_err().to_string();
        assert!(e.contains("exists and is not a directory"), "{e}");
        create_output_dir(&dir.path().join("a/b")).unwrap();
        create_output_dir(&dir.path().join("a/b")).unwrap();
    }

    #[test]
    fn output_files_are_checked_before_the_work() {
        let dir = tempfile::tempdir().unwrap();
        check_output_file(&dir.path().join("new.txt"), "--out").unwrap();
        let e = check_output_file(&dir.path().join("no/such.txt"), "--out").unwrap_err().to_string();
        assert!(e.contains("--out") && e.contains("does not exist"), "{e}");
        let e = check_output_file(dir.path(), "--json").unwrap_err().to_string();
        assert!(e.contains("--json") && e.contains("is a directory"), "{e}");
        // A bare file name is in the current directory, which exists.
        check_output_file(Path::new("out.txt"), "--out").unwrap();
    }

    #[test]
    fn creating_dir_makes_missing_parents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x/y/z.txt");
        write_atomic_creating_dir(&path, b"z").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"z");
    }
}
