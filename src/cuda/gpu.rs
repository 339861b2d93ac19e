//! The backend behind CUDA tensors: a real device ([`CudaExec`]) or the SIMT emulator ([`Emu`]),
//! chosen by [`Device::Cuda`] or [`Device::Emu`]. Both run the same kernel launches (the [`Exec`]
//! trait), so every CUDA tensor op is tested on the emulator where no GPU exists.

use std::sync::{Arc, Mutex, OnceLock};

use super::abi::automoe_dptr;
use super::device_exec::{CudaExec, DeviceBuf};
use super::emu::Emu;
use super::moe_exec::{Elem, Exec, KernelParams};
use super::moe_ops::Geometry;
use crate::{Device, Error, Result};

/// Where a CUDA tensor's kernels run.
#[derive(Clone)]
pub enum Gpu {
    Emu(Emu),
    Device(Arc<CudaExec>),
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({})", self.device())
    }
}

/// A buffer of a [`Gpu`]: host memory for the emulator, device memory otherwise.
pub enum GBuf<T> {
    Host(Vec<T>),
    Device(DeviceBuf<T>),
}

impl Gpu {
    /// The backend of `device` (a device's context and kernel cache are created once per process).
    pub fn of(device: Device) -> Result<Gpu> {
        static EXECS: OnceLock<Mutex<Vec<Option<Arc<CudaExec>>>>> = OnceLock::new();
        match device {
            Device::Emu => Ok(Gpu::Emu(Emu::default())),
            Device::Cpu => Err(Error::invalid("Gpu::of", "the CPU is not a CUDA backend")),
            Device::Cuda(i) => {
                let mut execs = EXECS.get_or_init(|| Mutex::new(Vec::new())).lock().unwrap_or_else(|p| p.into_inner());
                if execs.len() <= i {
                    execs.resize(i + 1, None);
                }
                if let Some(x) = &execs[i] {
                    return Ok(Gpu::Device(x.clone()));
                }
                let x = Arc::new(CudaExec::new(i)?);
                execs[i] = Some(x.clone());
                Ok(Gpu::Device(x))
            }
        }
    }

    pub fn device(&self) -> Device {
        match self {
            Gpu::Emu(_) => Device::Emu,
            Gpu::Device(x) => Device::Cuda(x.ordinal()),
        }
    }

    /// A zero-filled buffer of `n` elements.
    pub fn zeros<T: Elem>(&self, n: usize) -> Result<GBuf<T>> {
        match self {
            Gpu::Emu(_) => Ok(GBuf::Host(vec![T::zeroed(); n])),
            Gpu::Device(x) => Ok(GBuf::Device(x.alloc_zeros(n)?)),
        }
    }

    /// A buffer of `n` elements whose contents are undefined until a kernel writes them. The
    /// emulator fills it with `poison`, so a kernel that leaves an element unwritten fails tests.
    pub fn uninit<T: Elem>(&self, n: usize, poison: T) -> Result<GBuf<T>> {
        match self {
            Gpu::Emu(_) => Ok(GBuf::Host(vec![poison; n])),
            Gpu::Device(x) => Ok(GBuf::Device(x.alloc_uninit(n)?)),
        }
    }

    /// A copy of `buf` (device to device on a GPU).
    pub fn duplicate<T: Elem>(&self, buf: &GBuf<T>) -> Result<GBuf<T>> {
        match (self, buf) {
            (Gpu::Emu(_), GBuf::Host(v)) => Ok(GBuf::Host(v.clone())),
            (Gpu::Device(x), GBuf::Device(b)) => Ok(GBuf::Device(x.duplicate(b)?)),
            _ => Err(mismatch()),
        }
    }

    /// Waits for every queued kernel (a no-op on the emulator, which runs launches at once).
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Gpu::Emu(_) => Ok(()),
            Gpu::Device(x) => x.synchronize(),
        }
    }
}

thread_local! {
    static DOWNLOADS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Device-to-host copies made through a [`Gpu`] on this OS thread so far (the emulator's count as
/// a device's). On a device each one waits for the stream to drain, which is what keeps a step
/// from being captured in a CUDA graph or queued ahead of the GPU: tests count them to check that
/// a path stays on the device.
pub fn downloads_on_this_thread() -> u64 {
    DOWNLOADS.with(|n| n.get())
}

fn mismatch() -> Error {
    Error::Cuda("a buffer was used with a backend other than the one that made it".into())
}

impl Exec for Gpu {
    type Buf<T: Elem> = GBuf<T>;

    fn backend_name(&self) -> String {
        match self {
            Gpu::Emu(e) => e.backend_name(),
            Gpu::Device(x) => x.backend_name(),
        }
    }

    fn upload<T: Elem>(&self, host: &[T]) -> Result<GBuf<T>> {
        match self {
            Gpu::Emu(_) => Ok(GBuf::Host(host.to_vec())),
            Gpu::Device(x) => Ok(GBuf::Device(x.upload(host)?)),
        }
    }

    fn download<T: Elem>(&self, buf: &GBuf<T>) -> Result<Vec<T>> {
        DOWNLOADS.with(|n| n.set(n.get() + 1));
        match (self, buf) {
            (Gpu::Emu(_), GBuf::Host(v)) => Ok(v.clone()),
            (Gpu::Device(x), GBuf::Device(b)) => x.download(b),
            _ => Err(mismatch()),
        }
    }

    fn addr<T: Elem>(&self, buf: &GBuf<T>) -> automoe_dptr {
        match (self, buf) {
            (Gpu::Device(x), GBuf::Device(b)) => x.addr(b),
            (_, GBuf::Host(v)) => super::emu::addr(v),
            // A device buffer given to the emulator: an address the emulator must never touch.
            // Tensor ops check backends before launching, so this is unreachable in practice.
            (Gpu::Emu(_), GBuf::Device(_)) => 0,
        }
    }

    fn addr_mut<T: Elem>(&self, buf: &mut GBuf<T>) -> automoe_dptr {
        match (self, buf) {
            (Gpu::Device(x), GBuf::Device(b)) => x.addr_mut(b),
            (_, GBuf::Host(v)) => super::emu::addr_mut(v),
            (Gpu::Emu(_), GBuf::Device(_)) => 0,
        }
    }

    fn persistent_blocks(&self, per_sm: u32) -> u32 {
        match self {
            Gpu::Emu(e) => e.persistent_blocks(per_sm),
            Gpu::Device(x) => x.persistent_blocks(per_sm),
        }
    }

    fn has_wgmma(&self) -> bool {
        match self {
            Gpu::Emu(e) => e.has_wgmma(),
            Gpu::Device(x) => x.has_wgmma(),
        }
    }

    unsafe fn launch<P: KernelParams>(&self, file: &str, name: &str, g: Geometry, params: &P) -> Result<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            match self {
                Gpu::Emu(e) => e.launch(file, name, g, params),
                Gpu::Device(x) => x.launch(file, name, g, params),
            }
        }
    }

    unsafe fn enqueue<P: KernelParams>(&self, file: &str, name: &str, g: Geometry, params: &P) -> Result<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            match self {
                Gpu::Emu(e) => e.launch(file, name, g, params),
                Gpu::Device(x) => x.enqueue(file, name, g, params),
            }
        }
    }
}
