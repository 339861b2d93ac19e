//! Compiles every kernel file for sm_80 and sm_90a through the same NVRTC path the runtime uses
//! (`automoe::cuda::nvrtc::compile`), failing on any error or warning. Needs no GPU, only NVRTC
//! (scripts/nvrtc-venv.sh); without it the test is skipped, unless AUTOMOE_REQUIRE_NVRTC=1.

use automoe::cuda::nvrtc;

/// Says why a test is skipped, or fails it under AUTOMOE_REQUIRE_NVRTC=1 (set by
/// scripts/ci-cuda-checks.sh, which installs NVRTC first).
fn skip_without_nvrtc() {
    let why = "libnvrtc.so.13 cannot be loaded (run scripts/nvrtc-venv.sh and put its lib directory on LD_LIBRARY_PATH)";
    automoe::cuda::skip_unless_required("AUTOMOE_REQUIRE_NVRTC", &format!("nvrtc: {why}"));
}

#[test]
fn every_kernel_compiles_cleanly_for_sm80_and_sm90a() {
    if !nvrtc::nvrtc_present() {
        skip_without_nvrtc();
        return;
    }
    let (major, minor) = nvrtc::version().expect("NVRTC version");
    eprintln!("NVRTC {major}.{minor}, include dir {:?}", nvrtc::cuda_include_dir());
    let mut failures = Vec::new();
    for (name, _) in nvrtc::SOURCES {
        for arch in ["sm_80", "sm_90a"] {
            match nvrtc::compile(name, arch, false) {
                Ok(c) if c.log.is_empty() => eprintln!("ok {name} {arch}: {} bytes of CUBIN", c.cubin.len()),
                Ok(c) => failures.push(format!("{name} {arch}: warnings:\n{}", c.log)),
                Err(e) => failures.push(format!("{name} {arch}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn compiled_kernels_are_cached_on_disk() {
    if !nvrtc::nvrtc_present() {
        skip_without_nvrtc();
        return;
    }
    let dir = std::env::temp_dir().join(format!("automoe-kernel-cache-test-{}", std::process::id()));
    // The only test in this binary that reads AUTOMOE_KERNEL_CACHE; the other one compiles uncached.
    std::env::set_var("AUTOMOE_KERNEL_CACHE", &dir);
    let first = nvrtc::compile("permute.cu", "sm_80", true).expect("compile");
    let second = nvrtc::compile("permute.cu", "sm_80", true).expect("cached compile");
    assert!(!first.from_cache && second.from_cache, "second compile should hit the cache");
    assert_eq!(first.cubin, second.cubin);
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(files.iter().any(|f| f.starts_with("permute-sm_80-nvrtc13.") && f.ends_with(".cubin")), "{files:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
