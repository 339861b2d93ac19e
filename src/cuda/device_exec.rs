//! The real-device backend of the routing kernels: CUBIN from [`super::nvrtc`] loaded with cudarc,
//! launched on the device's one stream ([`super::stream`]: a created stream, which graph capture
//! accepts) with the abi.h struct as the single kernel argument.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

use super::abi::automoe_dptr;
use super::moe_exec::{Elem, Exec, KernelParams};
use super::moe_ops::Geometry;
use super::nvrtc;
use crate::{Error, Result};

fn cuda_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Cuda(format!("{what}: {e}"))
}

/// Dynamic shared memory a kernel may use without opting in (`cuFuncSetAttribute`).
const DEFAULT_SMEM_LIMIT: u32 = 48 * 1024;

/// A CUDA device ready to run the kernels of cuda/*.cu (compiled on first use per file).
pub struct CudaExec {
    ordinal: usize,
    stream: Arc<CudaStream>,
    arch: String,
    sms: u32,
    /// Each cuda/*.cu file loaded so far, by name.
    modules: Mutex<HashMap<String, LoadedFile>>,
    /// cuBLAS on this device's stream, created at the first dense product.
    blas: std::sync::OnceLock<cudarc::cublas::CudaBlas>,
}

/// A compiled cuda/*.cu file and the entry points launched from it so far: looked up once each,
/// not at every launch (`cuModuleGetFunction` is a driver call, and small ops launch thousands of
/// kernels per training update).
struct LoadedFile {
    module: Arc<CudaModule>,
    /// Each entry point with the dynamic shared memory it has opted in to beyond the default 48 KiB.
    functions: HashMap<String, (CudaFunction, u32)>,
}

/// A device buffer with its logical length (zero-length requests allocate one element, because a
/// zero-byte allocation is an error in the driver).
pub struct DeviceBuf<T> {
    slice: CudaSlice<T>,
    len: usize,
}

impl<T> DeviceBuf<T> {
    /// Logical length in elements.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl CudaExec {
    /// Device `ordinal`; [`Error::NoCudaDevice`] without a driver or device, [`Error::Cuda`] without
    /// NVRTC.
    pub fn new(ordinal: usize) -> Result<Self> {
        let stream = super::stream(ordinal)?;
        if !nvrtc::nvrtc_present() {
            return Err(Error::Cuda(
                "a CUDA device is present but NVRTC (libnvrtc.so.13) cannot be loaded; put it on LD_LIBRARY_PATH".into(),
            ));
        }
        let (major, minor) = stream.context().compute_capability().map_err(cuda_err("compute capability"))?;
        let sms = stream
            .context()
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(cuda_err("multiprocessor count"))?;
        Ok(CudaExec {
            ordinal,
            stream,
            arch: nvrtc::arch_for(major, minor),
            sms: sms.max(1) as u32,
            modules: Mutex::new(HashMap::new()),
            blas: std::sync::OnceLock::new(),
        })
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// cuBLAS bound to this device's stream; a clear error when libcublas cannot be loaded.
    pub fn blas(&self) -> Result<&cudarc::cublas::CudaBlas> {
        if let Some(b) = self.blas.get() {
            return Ok(b);
        }
        // SAFETY: only probes whether the shared library can be opened.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(Error::Cuda("cuBLAS (libcublas.so.13) cannot be loaded; put it on LD_LIBRARY_PATH".into()));
        }
        let b = cudarc::cublas::CudaBlas::new(self.stream.clone()).map_err(|e| Error::Cuda(format!("creating a cuBLAS handle: {e}")))?;
        Ok(self.blas.get_or_init(|| b))
    }

    /// A device buffer of `n` elements whose contents are undefined until a kernel writes them (no
    /// fill: one driver call and one queued memset fewer per op output than [`Self::alloc_zeros`];
    /// the emulator poisons such buffers instead, so its tests catch a kernel that reads one before
    /// writing it). With `AUTOMOE_POISON_DEVICE=1` (set by the GPU check's test runs) the device
    /// does the same: every byte 0xFF, a NaN in f32 and bf16 and an out-of-range index in u32, so
    /// an element no kernel wrote shows in the CUDA tests instead of passing on leftover memory.
    pub fn alloc_uninit<T: Elem>(&self, n: usize) -> Result<DeviceBuf<T>> {
        if poison_device_buffers() {
            return self.alloc_filled(n, 0xFF);
        }
        // SAFETY: the elements are plain old data (Elem: Pod) that no Rust code reads before a
        // kernel writes them: the buffer is only handed to kernels as an output address.
        let slice = unsafe { self.stream.alloc::<T>(n.max(1)) }.map_err(cuda_err("alloc"))?;
        Ok(DeviceBuf { slice, len: n })
    }

    /// A zero-filled device buffer of `n` elements.
    pub fn alloc_zeros<T: Elem>(&self, n: usize) -> Result<DeviceBuf<T>> {
        self.alloc_filled(n, 0)
    }

    /// A device buffer of `n` elements with every byte `byte`.
    fn alloc_filled<T: Elem>(&self, n: usize, byte: u8) -> Result<DeviceBuf<T>> {
        // SAFETY: the memory is filled below before anything can read it; every Elem is Pod, for
        // which any bytes are a valid value.
        let mut slice = unsafe { self.stream.alloc::<T>(n.max(1)) }.map_err(cuda_err("alloc"))?;
        let (ptr, _guard) = slice.device_ptr_mut(&self.stream);
        // SAFETY: ptr is a live allocation of n.max(1) elements on this stream.
        unsafe { cudarc::driver::result::memset_d8_async(ptr, byte, n.max(1) * std::mem::size_of::<T>(), self.stream.cu_stream()) }
            .map_err(cuda_err("memset"))?;
        drop(_guard);
        Ok(DeviceBuf { slice, len: n })
    }

    /// A device-to-device copy of `buf`.
    pub fn duplicate<T: Elem>(&self, buf: &DeviceBuf<T>) -> Result<DeviceBuf<T>> {
        // SAFETY: every element is overwritten by the copy below before anything reads it.
        let mut slice = unsafe { self.stream.alloc::<T>(buf.slice.len()) }.map_err(cuda_err("alloc"))?;
        self.stream.memcpy_dtod(&buf.slice, &mut slice).map_err(cuda_err("device copy"))?;
        Ok(DeviceBuf { slice, len: buf.len })
    }

    /// Waits for every kernel queued on this device's stream, naming a failure of one of them.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| Error::Cuda(format!("a queued kernel failed on cuda:{}: {e}", self.ordinal)))
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The `sm_XX[a]` the kernels are compiled for.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Entry point `name` of cuda/`file`, compiling (or loading from the disk cache) on first use,
    /// opted in to `smem_bytes` of dynamic shared memory when that is above the default 48 KiB.
    fn function(&self, file: &str, name: &str, smem_bytes: u32) -> Result<CudaFunction> {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if !modules.contains_key(file) {
            let compiled = nvrtc::compile(file, &self.arch, true)?;
            let module = self.stream.context().load_module(Ptx::from_binary(compiled.cubin)).map_err(cuda_err("loading the CUBIN"))?;
            modules.insert(file.to_string(), LoadedFile { module, functions: HashMap::new() });
        }
        let loaded = modules.get_mut(file).ok_or_else(|| Error::Cuda(format!("{file}: module missing after loading")))?;
        if !loaded.functions.contains_key(name) {
            let f = loaded.module.load_function(name).map_err(|e| Error::Cuda(format!("{file}: no kernel {name}: {e}")))?;
            loaded.functions.insert(name.to_string(), (f, DEFAULT_SMEM_LIMIT));
        }
        let (f, opted) =
            loaded.functions.get_mut(name).ok_or_else(|| Error::Cuda(format!("{file}: kernel {name} missing after loading")))?;
        if smem_bytes > *opted {
            // Above 48 KiB a kernel must opt in, once per function (the attribute stays set).
            f.set_attribute(cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem_bytes as i32)
                .map_err(|e| Error::Cuda(format!("{name}: {smem_bytes} bytes of dynamic shared memory on cuda:{}: {e}", self.ordinal)))?;
            *opted = smem_bytes;
        }
        Ok(f.clone())
    }

    /// Launches `name` with `params` as its only argument, without synchronising.
    ///
    /// # Safety
    /// Every address in `params` must be a live device allocation on this device, large enough for
    /// every access the kernel makes for the shapes in `params`, until the launch completes.
    pub unsafe fn launch_async<P: KernelParams>(&self, file: &str, name: &str, g: Geometry, params: &P) -> Result<()> {
        let f = self.function(file, name, g.smem_bytes)?;
        let cfg = LaunchConfig { grid_dim: (g.grid, 1, 1), block_dim: (g.block, 1, 1), shared_mem_bytes: g.smem_bytes };
        let mut b = self.stream.launch_builder(&f);
        b.arg(params);
        // SAFETY: the kernel's single parameter is the #[repr(C)] struct P, as declared in cuda/abi.h;
        // the caller guarantees the addresses inside it.
        unsafe { b.launch(cfg) }.map_err(|e| Error::Cuda(format!("launching {name} on cuda:{}: {e}", self.ordinal)))?;
        Ok(())
    }
}

impl Exec for CudaExec {
    type Buf<T: Elem> = DeviceBuf<T>;

    fn backend_name(&self) -> String {
        format!("cuda:{} ({})", self.ordinal, self.arch)
    }

    fn upload<T: Elem>(&self, host: &[T]) -> Result<DeviceBuf<T>> {
        let slice = if host.is_empty() { self.stream.clone_htod(&[T::zeroed()]) } else { self.stream.clone_htod(host) };
        Ok(DeviceBuf { slice: slice.map_err(cuda_err("upload"))?, len: host.len() })
    }

    fn download<T: Elem>(&self, buf: &DeviceBuf<T>) -> Result<Vec<T>> {
        // Kernels queued by `enqueue` report their failures here: name that, not the copy.
        self.stream.synchronize().map_err(|e| Error::Cuda(format!("a queued kernel failed on cuda:{}: {e}", self.ordinal)))?;
        let mut v = self.stream.clone_dtoh(&buf.slice).map_err(cuda_err("download"))?;
        v.truncate(buf.len);
        Ok(v)
    }

    fn has_wgmma(&self) -> bool {
        self.arch == "sm_90a"
    }

    fn persistent_blocks(&self, per_sm: u32) -> u32 {
        per_sm.max(1) * self.sms
    }

    fn addr<T: Elem>(&self, buf: &DeviceBuf<T>) -> automoe_dptr {
        // The guard only orders other streams against this one; every launch here uses this stream.
        let (ptr, _guard) = buf.slice.device_ptr(&self.stream);
        ptr as automoe_dptr
    }

    fn addr_mut<T: Elem>(&self, buf: &mut DeviceBuf<T>) -> automoe_dptr {
        let (ptr, _guard) = buf.slice.device_ptr_mut(&self.stream);
        ptr as automoe_dptr
    }

    unsafe fn enqueue<P: KernelParams>(&self, file: &str, name: &str, g: Geometry, params: &P) -> Result<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.launch_async(file, name, g, params) }
    }

    unsafe fn launch<P: KernelParams>(&self, file: &str, name: &str, g: Geometry, params: &P) -> Result<()> {
        // SAFETY: forwarded from this function's contract (addresses come from this backend's buffers).
        unsafe { self.launch_async(file, name, g, params)? };
        self.stream.synchronize().map_err(|e| Error::Cuda(format!("{name} failed on cuda:{}: {e}", self.ordinal)))
    }
}

/// Whether `AUTOMOE_POISON_DEVICE=1`: read once, since every op output asks.
fn poison_device_buffers() -> bool {
    static POISON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *POISON.get_or_init(|| std::env::var("AUTOMOE_POISON_DEVICE").is_ok_and(|v| v == "1"))
}
