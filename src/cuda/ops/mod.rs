//! Launchers of the tape's tensor kernels (cuda/elementwise.cu, reduce.cu, norm.cu, softmax.cu,
//! loss.cu, embedding.cu, optim.cu, decode.cu) on a [`Gpu`](super::Gpu): each checks sizes, allocates its
//! outputs (poisoned on the emulator), fills the abi.h struct and launches. Inputs are whole
//! buffers (contiguous from element 0) unless a function says otherwise; the tensor layer
//! (`src/cuda/tensor.rs`) makes views contiguous first. Each file's tests run the kernels on the
//! emulator (and on a device when one exists) against the CPU kernels of `src/cpu/`.

pub mod decode;
pub mod embedding;
pub mod loss;
pub mod norm;
pub mod softmax;

use super::gpu::GBuf;
use super::moe_exec::Elem;
use crate::{Error, Result};

/// Threads per block of the grid-strided elementwise kernels.
pub const BLOCK: u32 = 256;

/// Grid for `n` elements, one per thread, capped (the kernels are grid-strided).
pub fn grid_for(n: usize) -> u32 {
    n.div_ceil(BLOCK as usize).clamp(1, 65_535) as u32
}

/// `v` as the kernels' 32-bit `int`, or a clear error naming the op and the quantity.
pub fn to_i32(op: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::invalid(op, format!("{what} = {v} does not fit the kernels' 32-bit indices")))
}

/// Checks that a buffer holds at least `n` elements.
pub fn check_buf<T: Elem>(op: &'static str, what: &str, buf: &GBuf<T>, n: usize) -> Result<()> {
    let len = buf_len(buf);
    if len < n {
        return Err(Error::invalid(op, format!("{what} holds {len} elements, needs {n}")));
    }
    Ok(())
}

/// Elements in a buffer.
pub fn buf_len<T>(buf: &GBuf<T>) -> usize {
    match buf {
        GBuf::Host(v) => v.len(),
        GBuf::Device(d) => d.len(),
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::super::gpu::Gpu;
    use crate::Device;

    /// Every backend present: the emulator always, `cuda:0` when a device and NVRTC exist. A
    /// missing `cuda:0` is said on stderr, and is a failure under `AUTOMOE_REQUIRE_CUDA=1`.
    pub fn backends() -> Vec<Gpu> {
        let mut v = vec![Gpu::of(Device::Emu).expect("the emulator is always there")];
        match Gpu::of(Device::Cuda(0)) {
            Ok(g) => v.push(g),
            Err(e) => crate::cuda::skip_unless_required("AUTOMOE_REQUIRE_CUDA", &format!("cuda: {e}")),
        }
        v
    }

    /// max |got - want| / max(max |want|, 1e-6): the error measure of DESIGN.md.
    pub fn rel_err(got: &[f64], want: &[f64]) -> f64 {
        assert_eq!(got.len(), want.len(), "lengths differ");
        let scale = want.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
        got.iter().zip(want).fold(0.0f64, |m, (g, w)| if g.is_nan() || w.is_nan() { f64::INFINITY } else { m.max((g - w).abs()) }) / scale
    }
}
