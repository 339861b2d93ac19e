//! Reductions on CUDA tensors (cuda/reduce.cu): sum_to, the backward of every broadcast.

use super::super::abi::*;
use super::super::moe_exec::Exec;
use super::super::moe_ops::Geometry;
use super::{output, packed_dims, storage, suffix, wrap};
use crate::tensor::Tensor;
use crate::Result;

const FILE: &str = "reduce.cu";
/// cuda/reduce.cu's kThreads.
const THREADS: u32 = 256;

/// Sums `x` down to `to` (a shape `x`'s shape is a broadcast of; checked by the caller), in a
/// fixed order.
pub fn sum_to(x: &Tensor, to: &[usize]) -> Result<Tensor> {
    const OP: &str = "sum_to";
    let s = storage(OP, x)?;
    let gpu = s.gpu().clone();
    let from = x.shape();
    let lead = from.len() - to.len();
    // Kept dims (same size in `to`) index the output; the others are summed.
    let (mut kept_shape, mut kept_stride, mut red_shape, mut red_stride) = (vec![], vec![], vec![], vec![]);
    for (d, (&n, &st)) in from.iter().zip(x.layout().strides()).enumerate() {
        let out_dim = if d < lead { 1 } else { to[d - lead] };
        if out_dim == n {
            kept_shape.push(n);
            kept_stride.push(st);
        } else {
            red_shape.push(n);
            red_stride.push(st);
        }
    }
    let out_n: usize = to.iter().product();
    let red_n: usize = red_shape.iter().product();
    let (out, addr) = output(&gpu, x.dtype(), to)?;
    if out_n == 0 {
        return Ok(wrap(out, to));
    }
    let (out_rank, out_shape, os) = packed_dims(OP, &kept_shape, &[&kept_stride])?;
    let (red_rank, red_sh, rs) = packed_dims(OP, &red_shape, &[&red_stride])?;
    let p = SumToParams {
        x: s.addr_at(0),
        out: addr,
        out_n: out_n as i64,
        red_n: red_n as i64,
        out_shape,
        out_stride: os[0],
        red_shape: red_sh,
        red_stride: rs[0],
        x_offset: x.layout().offset() as i64,
        out_rank,
        red_rank,
    };
    let g = Geometry { grid: out_n.clamp(1, 65_535) as u32, block: THREADS, smem_bytes: 0 };
    // SAFETY: every (kept, reduced) index pair addresses an element of x's view; out is fresh.
    unsafe { gpu.enqueue(FILE, &format!("sum_to_{}", suffix(OP, x.dtype())?), g, &p)? };
    Ok(wrap(out, to))
}

/// Sum of every element as a 0-d tensor.
pub fn sum_all(x: &Tensor) -> Result<Tensor> {
    sum_to(x, &[])
}
