//! The MoE routing kernels (cuda/gating.cu, cuda/permute.cu) behind one host-slice API, implemented
//! by every backend that can run them: `super::moe_exec` implements it once for every
//! [`super::moe_exec::Exec`], i.e. the SIMT emulator ([`super::emu::Emu`]) and a CUDA device
//! ([`super::CudaExec`]). Tests and the lead's layer code call the same methods on either;
//! shape checks and launch geometry live here once so both backends launch identically.

use half::bf16;

use super::abi::*;
use crate::moe::reference::Dispatch;
pub use crate::moe::reference::{check_len, check_topk_idx};
use crate::{Error, Result};

/// Element types the kernels come in (`_f32`, `_bf16` entry points; f32 accumulation in both).
pub trait KernelFloat: Copy + Send + Sync + std::fmt::Debug + bytemuck::Pod + cudarc::driver::DeviceRepr + 'static {
    /// Entry-point suffix.
    const SUFFIX: &'static str;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
    /// Value written into outputs before a launch, so unwritten elements show up.
    fn poison() -> Self {
        Self::from_f32(f32::NAN)
    }
}

impl KernelFloat for f32 {
    const SUFFIX: &'static str = "f32";
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl KernelFloat for bf16 {
    const SUFFIX: &'static str = "bf16";
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

/// Integer poison for index outputs.
pub const POISON_I32: i32 = i32::MIN;

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub grid: u32,
    pub block: u32,
    pub smem_bytes: u32,
}

/// Warps per block of the one-warp-per-row kernels (gating, permute, combine).
pub const WARPS_PER_BLOCK: u32 = 4;
/// Largest expert count the kernels handle (registers in gating, shared memory in dispatch).
pub const MAX_EXPERTS: usize = 512;
/// Largest k the gating kernels handle.
pub const MAX_K: usize = 8;

/// Threads per block of the gating forward (any multiple of 32 works; tokens per block follow).
pub const GATING_THREADS: u32 = 128;

/// Lanes the gating forward gives each token for `e` experts (cuda/gating.cu: lanes_per_token).
pub fn gating_lanes_per_token(e: usize) -> usize {
    match e {
        0..=8 => 1,
        9..=16 => 2,
        17..=32 => 4,
        33..=64 => 8,
        65..=128 => 16,
        _ => 32,
    }
}

/// Entry point of the gating `stage` ("fwd" or "bwd") for `e` experts and element type `T`: the
/// plain kernels up to `AUTOMOE_GATING_MAX_NARROW_EXPERTS` (256), the `_wide` ones (16 logits per
/// lane) above (cuda/gating.cu).
pub fn gating_kernel<T: KernelFloat>(stage: &str, e: usize) -> String {
    let wide = if e > AUTOMOE_GATING_MAX_NARROW_EXPERTS as usize { "_wide" } else { "" };
    format!("topk_gating_{stage}{wide}_{}", T::SUFFIX)
}

/// Launch geometry of the gating forward and backward: a group of [`gating_lanes_per_token`] lanes per token.
pub fn gating_geometry(t: usize, e: usize) -> Geometry {
    let per_block = GATING_THREADS as usize / gating_lanes_per_token(e);
    Geometry { grid: t.div_ceil(per_block).max(1) as u32, block: GATING_THREADS, smem_bytes: 0 }
}

/// Launch geometry of the `topk_select_*` kernels: one thread per token.
pub fn select_geometry(t: usize) -> Geometry {
    let threads = AUTOMOE_SELECT_THREADS;
    Geometry { grid: t.div_ceil(threads as usize).max(1) as u32, block: threads, smem_bytes: 0 }
}

/// One warp per item (token or row).
pub fn warp_per_item(items: usize) -> Geometry {
    Geometry { grid: items.div_ceil(WARPS_PER_BLOCK as usize).max(1) as u32, block: WARPS_PER_BLOCK * 32, smem_bytes: 0 }
}

/// Blocks of the dispatch count and assign kernels: one per `AUTOMOE_DISPATCH_CHUNK` pairs, at least one.
pub fn dispatch_blocks(p: &DispatchParams) -> usize {
    (p.pairs.max(0) as usize).div_ceil(AUTOMOE_DISPATCH_CHUNK as usize).max(1)
}

/// Elements of the dispatch kernels' `block_rows` scratch buffer ([blocks, E] i32).
pub fn dispatch_scratch_len(p: &DispatchParams) -> usize {
    dispatch_blocks(p) * p.experts.max(0) as usize
}

/// The three dispatch kernels of cuda/permute.cu, in queue order, with their launch geometry.
pub fn dispatch_launches(p: &DispatchParams) -> [(&'static str, Geometry); 3] {
    let threads = AUTOMOE_DISPATCH_THREADS;
    let blocks = Geometry { grid: dispatch_blocks(p) as u32, block: threads, smem_bytes: 0 };
    let experts = Geometry { grid: p.experts.max(1) as u32, block: threads, smem_bytes: 0 };
    [("permute_dispatch_count_i32", blocks), ("permute_dispatch_scan_i32", experts), ("permute_dispatch_assign_i32", blocks)]
}

/// Rows the dispatch kernel may fill: every pair plus the worst-case padding of every segment.
pub fn dispatch_rows_cap(t: usize, k: usize, e: usize, pad_to: usize) -> usize {
    t * k + e * (pad_to - 1)
}

fn to_i32(op: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::invalid(op, format!("{what} = {v} does not fit the kernels' 32-bit indices")))
}

/// Validates gating shapes; returns (tokens, experts, k) as i32.
pub fn check_gating(op: &'static str, t: usize, e: usize, k: usize) -> Result<(i32, i32, i32)> {
    if e == 0 || e > MAX_EXPERTS {
        return Err(Error::invalid(op, format!("experts = {e} must be in 1..={MAX_EXPERTS}")));
    }
    if k == 0 || k > MAX_K.min(e) {
        return Err(Error::invalid(op, format!("k = {k} must be in 1..={}", MAX_K.min(e))));
    }
    // The kernels index [t, e] with 64-bit offsets, but t * e must still fit host allocations.
    t.checked_mul(e).ok_or_else(|| Error::invalid(op, "t * e overflows"))?;
    Ok((to_i32(op, "tokens", t)?, e as i32, k as i32))
}

/// Validates row indices (`pos` must be in 0..rows; `src_row` may also be -1).
pub fn check_rows(op: &'static str, what: &str, v: &[i32], rows: usize, allow_neg: bool) -> Result<()> {
    for &r in v {
        if (r < 0 && !(allow_neg && r == -1)) || (r >= 0 && r as usize >= rows) {
            return Err(Error::invalid(op, format!("{what} holds {r}, outside 0..{rows}")));
        }
    }
    Ok(())
}

/// Output of the gating forward.
#[derive(Clone, Debug)]
pub struct GatingOut {
    /// `[t, k]` chosen experts.
    pub idx: Vec<i32>,
    /// `[t, k]` gate weights.
    pub w: Vec<f32>,
    /// `[t, e]` softmax.
    pub probs: Vec<f32>,
}

/// Host-slice entry points of the routing kernels. Every implementation validates its input
/// (errors, never panics), poisons its outputs before launching and returns what the kernel wrote.
pub trait MoeKernels {
    /// Backend name for test messages ("emulator", "cuda:0").
    fn backend(&self) -> String;
    fn topk_gating_fwd<T: KernelFloat>(&self, logits: &[T], t: usize, e: usize, k: usize, renorm: bool) -> Result<GatingOut>;
    #[allow(clippy::too_many_arguments)]
    fn topk_gating_bwd<T: KernelFloat>(
        &self,
        probs: &[f32],
        idx: &[i32],
        w: &[f32],
        dw: &[f32],
        t: usize,
        e: usize,
        k: usize,
        renorm: bool,
    ) -> Result<Vec<T>>;
    /// `src_row` of the result has length `offsets[e]`, like the reference.
    fn dispatch(&self, idx: &[i32], t: usize, k: usize, e: usize, pad_to: usize) -> Result<Dispatch>;
    fn permute_fwd<T: KernelFloat>(&self, x: &[T], src_row: &[i32], t: usize, d: usize) -> Result<Vec<T>>;
    fn permute_bwd<T: KernelFloat>(&self, dxp: &[T], pos: &[i32], t: usize, k: usize, d: usize) -> Result<Vec<T>>;
    fn combine_fwd<T: KernelFloat>(&self, yp: &[T], pos: &[i32], w: &[f32], t: usize, k: usize, d: usize) -> Result<Vec<T>>;
    /// Returns `(dyp [rows, d], dw [t, k])`.
    #[allow(clippy::too_many_arguments)]
    fn combine_bwd<T: KernelFloat>(
        &self,
        dy: &[T],
        yp: &[T],
        pos: &[i32],
        w: &[f32],
        src_row: &[i32],
        t: usize,
        k: usize,
        d: usize,
    ) -> Result<(Vec<T>, Vec<f32>)>;
}

/// Checked shapes of a permute/combine call: (tokens, k, d, rows) as i32.
pub struct RowShapes {
    pub t: i32,
    pub k: i32,
    pub d: i32,
    pub rows: i32,
}

/// Validates a permuted buffer of `len` elements with rows of `d`, and the token count.
pub fn check_rows_shape(op: &'static str, len: usize, t: usize, k: usize, d: usize) -> Result<RowShapes> {
    if d == 0 || len % d != 0 {
        return Err(Error::invalid(op, format!("permuted buffer has {len} elements, not a multiple of d = {d}")));
    }
    if k == 0 {
        return Err(Error::invalid(op, "k must be at least 1"));
    }
    t.checked_mul(d).ok_or_else(|| Error::invalid(op, "t * d overflows"))?;
    Ok(RowShapes { t: to_i32(op, "tokens", t)?, k: to_i32(op, "k", k)?, d: to_i32(op, "d", d)?, rows: to_i32(op, "rows", len / d)? })
}

/// Parameters every backend builds the same way; the addresses (including the
/// [`dispatch_scratch_len`] scratch `block_rows`) are filled in by the caller.
pub fn dispatch_params(t: usize, k: usize, e: usize, pad_to: usize) -> Result<DispatchParams> {
    const OP: &str = "dispatch";
    if e == 0 || e > MAX_EXPERTS {
        return Err(Error::invalid(OP, format!("experts = {e} must be in 1..={MAX_EXPERTS}")));
    }
    if pad_to == 0 || k == 0 {
        return Err(Error::invalid(OP, format!("pad_to = {pad_to} and k = {k} must be at least 1")));
    }
    let cap = t.checked_mul(k).and_then(|p| e.checked_mul(pad_to - 1).and_then(|x| p.checked_add(x)));
    let cap = cap.ok_or_else(|| Error::invalid(OP, "row count overflows"))?;
    // The kernels index pairs by block * AUTOMOE_DISPATCH_CHUNK + offset in 32-bit ints.
    let max_pairs = i32::MAX as usize - AUTOMOE_DISPATCH_CHUNK as usize;
    if t * k > max_pairs {
        return Err(Error::invalid(OP, format!("t * k = {} pairs exceeds the kernels' limit of {max_pairs}", t * k)));
    }
    Ok(DispatchParams {
        pairs: to_i32(OP, "t * k", t * k)?,
        experts: e as i32,
        k: k as i32,
        pad_to: to_i32(OP, "pad_to", pad_to)?,
        rows_cap: to_i32(OP, "rows", cap)?,
        ..Default::default()
    })
}
