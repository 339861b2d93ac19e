//! Kernel build at run time: the embedded cuda/*.cu sources are compiled by NVRTC (loaded
//! dynamically through cudarc, so `cargo build` needs no toolkit) straight to CUBIN for a real
//! `sm_XX` architecture, and cached on disk keyed by source, options, architecture and NVRTC version.
//! CUBIN rather than PTX: a CUBIN never hits "PTX too new for this driver". The device path
//! (`super::launch`) and the CI compile test (tests/nvrtc_compile.rs) both go through [`compile`].

use std::collections::HashMap;
use std::ffi::{c_char, c_int, CString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::nvrtc::sys;

use crate::{Error, Result};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/kernel_sources.rs"));
}

/// Every kernel source file (`gating.cu`, `permute.cu`, ...) with its text.
pub const SOURCES: &[(&str, &str)] = embedded::SOURCES;
/// The headers the sources may `#include "..."` (`common.cuh`, `abi.h`), handed to NVRTC by name.
pub const HEADERS: &[(&str, &str)] = embedded::HEADERS;

/// Whether `libnvrtc.so.13` can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: only probes whether the shared library can be opened; calls nothing in it.
    unsafe { sys::is_culib_present() }
}

fn no_nvrtc() -> Error {
    Error::Cuda(
        "NVRTC (libnvrtc.so.13) cannot be loaded: put its directory on LD_LIBRARY_PATH (scripts/nvrtc-venv.sh installs one from PyPI)"
            .into(),
    )
}

fn check(what: &str, r: sys::nvrtcResult) -> Result<()> {
    if r == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(Error::Cuda(format!("NVRTC {what} failed: {r:?}")))
    }
}

/// NVRTC's (major, minor) version.
pub fn version() -> Result<(i32, i32)> {
    if !nvrtc_present() {
        return Err(no_nvrtc());
    }
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: the library is present (checked above); both pointers are valid for writes.
    check("nvrtcVersion", unsafe { sys::nvrtcVersion(&mut major, &mut minor) })?;
    Ok((major, minor))
}

/// The NVRTC architecture for a compute capability: the arch-specific `sm_XXa` from Hopper on (the
/// CUBIN is built for this very device, so its arch-only features such as wgmma are usable).
pub fn arch_for(major: i32, minor: i32) -> String {
    if major >= 9 {
        format!("sm_{major}{minor}a")
    } else {
        format!("sm_{major}{minor}")
    }
}

/// Directory holding `cuda_bf16.h`: `$AUTOMOE_CUDA_INCLUDE`, `$CUDA_HOME/include`,
/// `$CUDA_PATH/include`, `/usr/local/cuda/include`, then this checkout's `.venv-nvrtc` wheel.
pub fn cuda_include_dir() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("AUTOMOE_CUDA_INCLUDE") {
        candidates.push(d.into());
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(d) = std::env::var_os(var) {
            candidates.push(Path::new(&d).join("include"));
        }
    }
    candidates.push("/usr/local/cuda/include".into());
    let venv_lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-nvrtc/lib");
    if let Ok(entries) = std::fs::read_dir(&venv_lib) {
        for e in entries.flatten() {
            candidates.push(e.path().join("site-packages/nvidia/cu13/include"));
        }
    }
    candidates.into_iter().find(|d| d.join("cuda_bf16.h").is_file())
}

/// The options every kernel is compiled with (they are part of the cache key).
pub fn options(arch: &str) -> Vec<String> {
    let mut o = vec![format!("--gpu-architecture={arch}"), "-std=c++17".into(), "-lineinfo".into()];
    if let Some(inc) = cuda_include_dir() {
        o.push(format!("--include-path={}", inc.display()));
    }
    o
}

/// A compiled kernel file.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub cubin: Vec<u8>,
    /// NVRTC's log (warnings); empty for a clean compile. Not kept for cache hits.
    pub log: String,
    pub from_cache: bool,
}

fn source(name: &str) -> Result<&'static str> {
    SOURCES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| Error::invalid("nvrtc::compile", format!("no kernel source named {name:?}")))
}

/// FNV-1a: a hash that is stable across Rust versions, so cache file names stay valid.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.iter().chain(&[0xffu8]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// `$AUTOMOE_KERNEL_CACHE`, else `$XDG_CACHE_HOME/automoe/kernels`, else `~/.cache/automoe/kernels`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("AUTOMOE_KERNEL_CACHE") {
        return Some(d.into());
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(Path::new(&d).join("automoe/kernels"));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/automoe/kernels"))
}

/// Compiles source `name` (e.g. `"gating.cu"`) for `arch`, using and filling the disk cache unless
/// `use_cache` is false. Any NVRTC error is returned with its log.
pub fn compile(name: &str, arch: &str, use_cache: bool) -> Result<Compiled> {
    let src = source(name)?;
    let (major, minor) = version()?;
    let opts = options(arch);
    let mut parts: Vec<&[u8]> = vec![src.as_bytes(), arch.as_bytes()];
    let ver = format!("{major}.{minor}");
    parts.push(ver.as_bytes());
    for o in &opts {
        // The include path itself is machine-specific; what matters is the NVRTC version.
        if !o.starts_with("--include-path") {
            parts.push(o.as_bytes());
        }
    }
    for (n, h) in HEADERS {
        parts.push(n.as_bytes());
        parts.push(h.as_bytes());
    }
    let key = fnv1a(&parts);
    let stem = name.trim_end_matches(".cu");
    let cached = cache_dir().map(|d| d.join(format!("{stem}-{arch}-nvrtc{ver}-{key:016x}.cubin")));
    if !use_cache {
        let (cubin, log) = compile_uncached(name, src, &opts)?;
        return Ok(Compiled { cubin, log, from_cache: false });
    }
    // One compile per key and process: others asking meanwhile wait for it and take its CUBIN
    // (test binaries build a device backend per test, in parallel, and would otherwise all
    // compile the largest sources at once).
    let slot = in_process_slot(key);
    let mut done = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(bytes) = done.as_ref() {
        return Ok(Compiled { cubin: bytes.clone(), log: String::new(), from_cache: true });
    }
    if let Some(bytes) = cached.as_ref().and_then(|p| std::fs::read(p).ok()) {
        *done = Some(bytes.clone());
        return Ok(Compiled { cubin: bytes, log: String::new(), from_cache: true });
    }
    let (cubin, log) = compile_uncached(name, src, &opts)?;
    *done = Some(cubin.clone());
    if let Some(path) = cached {
        // Best effort: a read-only or full cache directory only costs a recompile next time.
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &cubin).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok(Compiled { cubin, log, from_cache: false })
}

/// A CUBIN once this process has it, behind the lock its compile holds.
type Slot = Arc<Mutex<Option<Vec<u8>>>>;

/// The slot of cache key `key`.
fn in_process_slot(key: u64) -> Slot {
    static SLOTS: OnceLock<Mutex<HashMap<u64, Slot>>> = OnceLock::new();
    let mut slots = SLOTS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    slots.entry(key).or_default().clone()
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid("nvrtc", format!("interior NUL in {s:?}")))
}

fn compile_uncached(name: &str, src: &str, opts: &[String]) -> Result<(Vec<u8>, String)> {
    let c_src = cstring(src)?;
    let c_name = cstring(name)?;
    let header_src: Vec<CString> = HEADERS.iter().map(|(_, h)| cstring(h)).collect::<Result<_>>()?;
    let header_names: Vec<CString> = HEADERS.iter().map(|(n, _)| cstring(n)).collect::<Result<_>>()?;
    let hs: Vec<*const c_char> = header_src.iter().map(|c| c.as_ptr()).collect();
    let hn: Vec<*const c_char> = header_names.iter().map(|c| c.as_ptr()).collect();
    let c_opts: Vec<CString> = opts.iter().map(|o| cstring(o)).collect::<Result<_>>()?;
    let po: Vec<*const c_char> = c_opts.iter().map(|c| c.as_ptr()).collect();

    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: NVRTC is present (compile() called version() first); every pointer comes from a live
    // CString/Vec above, the header arrays both have HEADERS.len() entries.
    check("nvrtcCreateProgram", unsafe {
        sys::nvrtcCreateProgram(&mut prog, c_src.as_ptr(), c_name.as_ptr(), hs.len() as c_int, hs.as_ptr(), hn.as_ptr())
    })?;
    // SAFETY: `prog` is a valid program until destroyed below; option pointers are live CStrings.
    let compiled = unsafe { sys::nvrtcCompileProgram(prog, po.len() as c_int, po.as_ptr()) };
    // SAFETY: `prog` is valid; the log buffer is sized by nvrtcGetProgramLogSize.
    let log = unsafe { program_log(prog) };
    let result = if compiled != sys::nvrtcResult::NVRTC_SUCCESS {
        Err(Error::Cuda(format!("NVRTC failed to compile {name} ({compiled:?}) with {opts:?}:\n{}", log.clone().unwrap_or_default())))
    } else {
        // SAFETY: `prog` compiled successfully; the buffer is sized by nvrtcGetCUBINSize.
        unsafe { program_cubin(prog) }.map(|c| (c, log.unwrap_or_default()))
    };
    // SAFETY: destroys the program created above exactly once.
    let _ = unsafe { sys::nvrtcDestroyProgram(&mut prog) };
    result
}

/// # Safety
/// `prog` must be a valid NVRTC program.
unsafe fn program_log(prog: sys::nvrtcProgram) -> Option<String> {
    let mut n = 0usize;
    // SAFETY: per the function contract `prog` is valid; `n` is a valid out-pointer.
    if unsafe { sys::nvrtcGetProgramLogSize(prog, &mut n) } != sys::nvrtcResult::NVRTC_SUCCESS {
        return None;
    }
    let mut buf = vec![0u8; n.max(1)];
    // SAFETY: `buf` holds the n bytes NVRTC reported.
    if unsafe { sys::nvrtcGetProgramLog(prog, buf.as_mut_ptr() as *mut c_char) } != sys::nvrtcResult::NVRTC_SUCCESS {
        return None;
    }
    let s = String::from_utf8_lossy(&buf);
    Some(s.trim_end_matches('\0').trim().to_string())
}

/// # Safety
/// `prog` must be a successfully compiled NVRTC program for a real `sm_XX` architecture.
unsafe fn program_cubin(prog: sys::nvrtcProgram) -> Result<Vec<u8>> {
    let mut n = 0usize;
    // SAFETY: per the function contract `prog` is valid; `n` is a valid out-pointer.
    check("nvrtcGetCUBINSize", unsafe { sys::nvrtcGetCUBINSize(prog, &mut n) })?;
    if n == 0 {
        return Err(Error::Cuda("NVRTC produced an empty CUBIN (was the architecture a virtual compute_XX?)".into()));
    }
    let mut buf = vec![0u8; n];
    // SAFETY: `buf` holds the n bytes NVRTC reported.
    check("nvrtcGetCUBIN", unsafe { sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char) })?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_embedded() {
        let names: Vec<&str> = SOURCES.iter().map(|(n, _)| *n).collect();
        assert!(names.contains(&"gating.cu") && names.contains(&"permute.cu"), "{names:?}");
        assert!(HEADERS.iter().any(|(n, _)| *n == "abi.h") && HEADERS.iter().any(|(n, _)| *n == "common.cuh"));
    }

    #[test]
    fn hopper_gets_the_arch_specific_target() {
        assert_eq!(arch_for(9, 0), "sm_90a");
        assert_eq!(arch_for(8, 0), "sm_80");
        assert_eq!(arch_for(8, 6), "sm_86");
    }

    #[test]
    fn missing_source_is_an_error() {
        assert!(source("nope.cu").is_err());
    }
}
