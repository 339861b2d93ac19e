//! Keeping freed memory in the process instead of handing it back to the kernel.
//!
//! glibc serves every allocation above its mmap threshold (at most 32 MiB with the default
//! dynamic threshold) with a fresh `mmap` and returns it with `munmap` on free, so each large
//! tensor (a `[4096, 2048]` f32 activation is 32 MiB) is faulted in page by page, with the kernel
//! zeroing every page, on every training step. Measured: a `[4096, 512] x [512, 2048]` tensor
//! matmul takes 30 ms with fresh pages and 19 ms with reused memory (`docs/BENCHMARKS.md`).

use std::sync::Once;

/// Allocations below this come from glibc's heap rather than their own `mmap`.
const MMAP_THRESHOLD: i32 = 1 << 30;

/// Free memory at the top of the heap beyond this is returned to the kernel.
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Makes glibc keep freed memory for reuse (the heap serves allocations up to 1 GiB and is
/// trimmed only when more than 1 GiB at its top is free). The process's resident memory then
/// stays near its peak, as with PyTorch's caching allocators; in exchange, big tensors cost a
/// `memset` instead of a page fault per 4 KiB. Called once by the `automoe` command line and the
/// benchmarks; Rust programs built on the crate may call it at startup too. Idempotent; does
/// nothing on platforms other than Linux with glibc.
pub fn retain_freed_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters (under glibc's own arena lock); it
        // touches no memory of ours.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    });
}
