//! Parallel corpora: two line-aligned plain-text files (line i of the source translates line i of the
//! target), optionally gzip-compressed (a name ending in `.gz`), and the length filter applied after
//! tokenization.
//!
//! Reading is strict (a line-count mismatch or invalid UTF-8 is an error naming the file and line)
//! because a silently misaligned corpus trains a model that translates the wrong sentences.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// One sentence pair after tokenization (both sides end with `</s>`, as [`super::Tokenizer::encode`]
/// produces them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedPair {
    pub src: Vec<u32>,
    pub tgt: Vec<u32>,
}

/// Reads all lines of a text file (gzip when the name ends in `.gz`), with the line terminator
/// (`\n` or `\r\n`) removed and surrounding whitespace trimmed. Errors name the file and, for
/// invalid UTF-8, the 1-based line number.
pub fn read_lines(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let is_gz = path.extension().is_some_and(|e| e == "gz");
    if !is_gz {
        return read_lines_from(file, path);
    }
    // A .gz that is not gzip would otherwise read as "unexpected end of file".
    let mut magic = [0u8; 2];
    let got = file.read(&mut magic).map_err(|e| Error::io(path, e))?;
    if got == 0 {
        return Ok(Vec::new()); // an empty file: no lines, as an empty plain file has
    }
    if got < 2 || magic != [0x1f, 0x8b] {
        return Err(Error::Format { path: path.to_path_buf(), msg: "named .gz but not a gzip file".into() });
    }
    let file = std::io::Read::chain(&magic[..got], file);
    read_lines_from(flate2::read::MultiGzDecoder::new(file), path)
}

/// [`read_lines`] from any reader (stdin); `path` names it in errors.
pub fn read_lines_from(reader: impl Read, path: &Path) -> Result<Vec<String>> {
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        let line_no = lines.len() + 1;
        let text = std::str::from_utf8(&buf).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            msg: format!("line {line_no}: invalid UTF-8 at byte {} of the line", e.valid_up_to()),
        })?;
        // Trimming also removes `\r\n` and makes the tokenizer's round trip exact (Metaspace cannot
        // restore leading or trailing spaces).
        lines.push(text.trim().to_string());
    }
    Ok(lines)
}

/// Reads a parallel corpus from two line-aligned files. Both files must be non-empty and have the
/// same number of lines. Empty lines are kept here (and dropped by [`filter_pairs`], which counts
/// them) so that line numbers in later messages still match the files.
pub fn read_parallel(src_path: impl AsRef<Path>, tgt_path: impl AsRef<Path>) -> Result<Vec<(String, String)>> {
    let (src_path, tgt_path) = (src_path.as_ref(), tgt_path.as_ref());
    let src = read_lines(src_path)?;
    let tgt = read_lines(tgt_path)?;
    for (lines, path) in [(&src, src_path), (&tgt, tgt_path)] {
        if lines.is_empty() {
            return Err(Error::Format {
                path: path.to_path_buf(),
                msg: "file is empty (a parallel corpus needs at least one line)".into(),
            });
        }
    }
    if src.len() != tgt.len() {
        return Err(Error::Format {
            path: src_path.to_path_buf(),
            msg: format!(
                "line counts differ: {} has {} lines but {} has {} lines (the files must be line-aligned)",
                src_path.display(),
                src.len(),
                tgt_path.display(),
                tgt.len()
            ),
        });
    }
    Ok(src.into_iter().zip(tgt).collect())
}

/// The paths of a split `prefix.{src_lang}` / `prefix.{tgt_lang}` (e.g. `data/train.en`,
/// `data/train.de`), the usual layout of MT corpora. A side stored compressed only
/// (`train.en.gz`) is found as such; when neither exists the plain name is returned, for the
/// read's error to name.
pub fn split_paths(dir: impl AsRef<Path>, split: &str, src_lang: &str, tgt_lang: &str) -> (PathBuf, PathBuf) {
    let dir = dir.as_ref();
    let side = |lang: &str| {
        let plain = dir.join(format!("{split}.{lang}"));
        let gz = dir.join(format!("{split}.{lang}.gz"));
        if !plain.exists() && gz.exists() {
            gz
        } else {
            plain
        }
    };
    (side(src_lang), side(tgt_lang))
}

/// Length filter applied to tokenized pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LengthFilter {
    /// Maximum tokens per side, counting the appended `</s>`.
    pub max_tokens: usize,
    /// Maximum of `longer / shorter` side length (in tokens, with `</s>`); pairs above are usually
    /// misalignments. `f64::INFINITY` disables the check.
    pub max_ratio: f64,
}

impl Default for LengthFilter {
    fn default() -> Self {
        LengthFilter { max_tokens: 256, max_ratio: 3.0 }
    }
}

/// What [`filter_pairs`] did. `read == kept + dropped_empty + dropped_length + dropped_ratio`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterReport {
    pub read: usize,
    pub kept: usize,
    /// One side (or both) empty after trimming.
    pub dropped_empty: usize,
    /// One side longer than `max_tokens`.
    pub dropped_length: usize,
    /// Length ratio above `max_ratio`.
    pub dropped_ratio: usize,
}

impl std::fmt::Display for FilterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read {} pairs, kept {}, dropped {} empty, {} too long, {} bad length ratio",
            self.read, self.kept, self.dropped_empty, self.dropped_length, self.dropped_ratio
        )
    }
}

/// Tokenizes and filters pairs. `encode` maps a sentence to ids (normally
/// [`super::Tokenizer::encode`]; a closure keeps this testable without a trained tokenizer). Checks
/// run in order empty, length, ratio; a pair is counted under the first check it fails.
pub fn filter_pairs<F>(pairs: &[(String, String)], filter: &LengthFilter, mut encode: F) -> Result<(Vec<TokenizedPair>, FilterReport)>
where
    F: FnMut(&str) -> Result<Vec<u32>>,
{
    if filter.max_tokens == 0 {
        return Err(Error::invalid("filter_pairs", "max_tokens must be at least 1"));
    }
    if filter.max_ratio.is_nan() || filter.max_ratio < 1.0 {
        return Err(Error::invalid("filter_pairs", format!("max_ratio must be >= 1, got {}", filter.max_ratio)));
    }
    let mut report = FilterReport { read: pairs.len(), ..Default::default() };
    let mut kept = Vec::with_capacity(pairs.len());
    for (s, t) in pairs {
        if s.trim().is_empty() || t.trim().is_empty() {
            report.dropped_empty += 1;
            continue;
        }
        let src = encode(s)?;
        let tgt = encode(t)?;
        if src.len() > filter.max_tokens || tgt.len() > filter.max_tokens {
            report.dropped_length += 1;
            continue;
        }
        let (lo, hi) = (src.len().min(tgt.len()).max(1), src.len().max(tgt.len()));
        if hi as f64 / lo as f64 > filter.max_ratio {
            report.dropped_ratio += 1;
            continue;
        }
        kept.push(TokenizedPair { src, tgt });
    }
    report.kept = kept.len();
    Ok((kept, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct TmpDir(PathBuf);
    impl TmpDir {
        fn new(tag: &str) -> TmpDir {
            let d = std::env::temp_dir().join(format!("automoe_corpus_{tag}_{}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            TmpDir(d)
        }
        fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        }
    }
    impl Drop for TmpDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn reads_plain_and_gzip() {
        let d = TmpDir::new("gz");
        let src = d.write("a.en", b"hello world\r\n  two  \nthree");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all("hallo welt\nzwei\ndrei\n".as_bytes()).unwrap();
        let tgt = d.write("a.de.gz", &gz.finish().unwrap());
        let pairs = read_parallel(&src, &tgt).unwrap();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[0], ("hello world".to_string(), "hallo welt".to_string()));
        assert_eq!(pairs[1].0, "two");
        assert_eq!(pairs[2], ("three".to_string(), "drei".to_string()));
        // A split finds the compressed side when only it exists, and names the plain file else.
        let (s, t) = split_paths(&d.0, "a", "en", "de");
        assert_eq!((s, t), (src.clone(), tgt.clone()));
        let (s, _) = split_paths(&d.0, "missing", "en", "de");
        assert_eq!(s, d.0.join("missing.en"));
    }

    #[test]
    fn mismatched_counts_name_both_files() {
        let d = TmpDir::new("mismatch");
        let src = d.write("s.txt", b"a\nb\nc\n");
        let tgt = d.write("t.txt", b"a\nb\n");
        let msg = read_parallel(&src, &tgt).unwrap_err().to_string();
        assert!(msg.contains("3 lines") && msg.contains("2 lines"), "{msg}");
        assert!(msg.contains("s.txt") && msg.contains("t.txt"), "{msg}");
    }

    #[test]
    fn invalid_utf8_names_line() {
        let d = TmpDir::new("utf8");
        let src = d.write("s.txt", b"ok\nfine\nbad \xff byte\n");
        let tgt = d.write("t.txt", b"a\nb\nc\n");
        let err = read_parallel(&src, &tgt).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Format { .. }));
        assert!(msg.contains("line 3") && msg.contains("s.txt"), "{msg}");
    }

    #[test]
    fn empty_and_missing_files_are_errors() {
        let d = TmpDir::new("empty");
        let src = d.write("s.txt", b"");
        let tgt = d.write("t.txt", b"x\n");
        let msg = read_parallel(&src, &tgt).unwrap_err().to_string();
        assert!(msg.contains("empty") && msg.contains("s.txt"), "{msg}");
        assert!(matches!(read_parallel(d.0.join("nope"), &tgt), Err(Error::Io { .. })));
        // A .gz that is not gzip says so; a gzip stream cut short is an I/O error on that file;
        // an empty .gz has no lines.
        let bad = d.write("bad.gz", b"not gzip at all");
        let msg = read_lines(&bad).unwrap_err().to_string();
        assert!(msg.contains("bad.gz") && msg.contains("not a gzip file"), "{msg}");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"eins\nzwei\n").unwrap();
        let whole = gz.finish().unwrap();
        let cut = d.write("cut.gz", &whole[..whole.len() / 2]);
        assert!(matches!(read_lines(cut), Err(Error::Io { .. })));
        assert_eq!(read_lines(d.write("empty.gz", b"")).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn filter_counts_each_reason() {
        // Whitespace "tokenizer" plus eos (id 2), enough to exercise the filter.
        let enc = |s: &str| -> Result<Vec<u32>> { Ok(s.split_whitespace().map(|_| 5).chain([2]).collect()) };
        let pairs: Vec<(String, String)> = [
            ("a b c", "x y z"),         // kept
            ("", "x"),                  // empty
            ("a", "  "),                // empty
            ("a b c d e f g h", "x y"), // too long (9 > 6 tokens)
            ("a", "x y z w v"),         // ratio 6/2 = 3 > 2.5
            ("a b", "x y z"),           // ratio 4/3, kept
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let (kept, rep) = filter_pairs(&pairs, &LengthFilter { max_tokens: 6, max_ratio: 2.5 }, enc).unwrap();
        assert_eq!(rep, FilterReport { read: 6, kept: 2, dropped_empty: 2, dropped_length: 1, dropped_ratio: 1 });
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].src, vec![5, 5, 5, 2]);
        assert!(filter_pairs(&pairs, &LengthFilter { max_tokens: 0, max_ratio: 2.0 }, enc).is_err());
        assert!(filter_pairs(&pairs, &LengthFilter { max_tokens: 5, max_ratio: 0.5 }, enc).is_err());
    }
}
