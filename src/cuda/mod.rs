//! The CUDA side. cudarc loads `libcuda` and NVRTC at run time, so this module always compiles and a
//! machine without CUDA gets [`crate::Error::NoCudaDevice`] from every entry point.
//!
//! Tensors on [`crate::Device::Cuda`] (a GPU) or [`crate::Device::Emu`] (the same kernels on the
//! SIMT emulator) run every op as CUDA kernels:
//!
//! ```
//! use automoe::{DType, Device, Tensor};
//! let a = Tensor::randn(&[4, 8], 1.0, DType::F32, &mut automoe::rng::seeded(1)).to_device(Device::Emu)?;
//! let y = a.matmul(&a.t()?)?.relu()?; // CUDA kernels (emulated); `y` stays on the device
//! assert_eq!(y.device(), Device::Emu);
//! let host: Vec<f32> = y.to_vec()?; // back to the host
//! assert_eq!(host.len(), 16);
//! # Ok::<(), automoe::Error>(())
//! ```

pub mod abi;
pub mod device_exec;
pub mod emu;
pub mod gpu;
pub mod grouped_gemm;
pub mod moe_exec;
pub mod moe_layer;
pub mod moe_ops;
pub mod nvrtc;
pub mod ops;
mod storage;
pub mod tensor;

use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaStream};

pub use device_exec::CudaExec;
pub use emu::Emu;
pub use gpu::{downloads_on_this_thread, GBuf, Gpu};
pub use storage::{CudaData, CudaStorage};

use crate::{Error, Result};

/// For tests: reports that a check was skipped because `what` (e.g. "cuda: <why>") is unavailable,
/// or panics when the environment variable `require` is "1" (`AUTOMOE_REQUIRE_CUDA` on the GPU runs
/// of scripts/gpu-bundle-run.sh, `AUTOMOE_REQUIRE_NVRTC` in scripts/ci-cuda-checks.sh), so that a
/// run meant to reach the device or NVRTC cannot pass by skipping. The line printed starts with
/// "skipped on", which scripts/gpu-bundle-run.sh looks for in its logs.
#[doc(hidden)]
pub fn skip_unless_required(require: &str, what: &str) {
    if std::env::var(require).is_ok_and(|v| v == "1") {
        panic!("{require}=1 but {what}");
    }
    eprintln!("skipped on {what}");
}

/// Whether the CUDA driver library (`libcuda.so.1`) can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: only probes whether the shared library can be opened; calls nothing in it.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Number of CUDA devices, or a clear error when there is no driver or it fails to initialise.
pub fn device_count() -> Result<usize> {
    if !driver_present() {
        return Err(Error::NoCudaDevice { reason: "the CUDA driver library (libcuda.so.1) cannot be loaded".into() });
    }
    let n =
        CudaContext::device_count().map_err(|e| Error::NoCudaDevice { reason: format!("the CUDA driver failed to initialise: {e}") })?;
    Ok(n.max(0) as usize)
}

/// `NVIDIA H200, sm_90a`: the device's name and the architecture the kernels are compiled for.
pub fn describe_device(ordinal: usize) -> Result<String> {
    let ctx = stream(ordinal)?.context().clone();
    let (major, minor) = ctx.compute_capability().map_err(|e| Error::Cuda(format!("cuda:{ordinal}: compute capability: {e}")))?;
    let name = ctx.name().map_err(|e| Error::Cuda(format!("cuda:{ordinal}: name: {e}")))?;
    Ok(format!("{name}, {}", nvrtc::arch_for(major, minor)))
}

/// Stream-ordered allocations (`cuMemAllocAsync`, which cudarc uses where the device supports
/// memory pools) come from the device's default pool, whose release threshold of 0 hands every
/// unused byte back to the driver at each synchronisation, so that the next op's allocation maps
/// fresh pages, at every download (each training micro-batch's loss, each decoder step). The
/// threshold at its maximum keeps what the pool holds, as a caching allocator does. Best effort: a
/// driver that refuses only costs speed.
fn keep_pool_memory(ctx: &CudaContext) {
    use cudarc::driver::{result, sys};
    // SAFETY: the device comes from a live context; the attribute takes a cuuint64_t.
    let _ = (|| unsafe {
        let pools = result::device::get_attribute(ctx.cu_device(), sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED)?;
        if pools == 0 {
            return Ok(());
        }
        ctx.bind_to_thread()?;
        let pool = result::device::get_default_mem_pool(ctx.cu_device())?;
        let mut keep = u64::MAX;
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &mut keep as *mut u64 as *mut std::ffi::c_void,
        )
    })();
}

/// The stream all of the crate's work on device `ordinal` goes to (kernels, copies, cuBLAS,
/// allocations), creating the device's context and the stream once per process.
pub fn stream(ordinal: usize) -> Result<Arc<CudaStream>> {
    static STREAMS: OnceLock<Mutex<Vec<Option<Arc<CudaStream>>>>> = OnceLock::new();
    let n = device_count()?;
    if ordinal >= n {
        return Err(Error::NoCudaDevice { reason: format!("cuda:{ordinal} requested but {n} device(s) present") });
    }
    let mut streams = STREAMS.get_or_init(|| Mutex::new(Vec::new())).lock().unwrap_or_else(|p| p.into_inner());
    if streams.len() < n {
        streams.resize(n, None);
    }
    if let Some(s) = &streams[ordinal] {
        return Ok(s.clone());
    }
    let ctx = CudaContext::new(ordinal).map_err(|e| Error::Cuda(format!("creating a context on cuda:{ordinal}: {e}")))?;
    // A created stream, not the context's legacy default stream: CUDA refuses to capture the
    // legacy stream into a graph (cuStreamBeginCapture), and graph capture is how the kernel
    // benchmarks time device work and what a decoder step needs to be replayed cheaply.
    // Creating a second stream puts cudarc into its multi-stream mode, in which every buffer
    // records an event at each use so that streams can be ordered; the crate uses this one stream
    // only, so there is nothing to order, and the tracking is turned off first.
    // SAFETY: every buffer of this context is allocated, used and freed on this one stream.
    unsafe { ctx.disable_event_tracking() };
    let s = ctx.new_stream().map_err(|e| Error::Cuda(format!("creating a stream on cuda:{ordinal}: {e}")))?;
    keep_pool_memory(&ctx);
    streams[ordinal] = Some(s.clone());
    Ok(s)
}
