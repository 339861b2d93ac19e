//! The tape's MoE routing kept on the device (CUDA tensors without a capacity limit): the top-k of
//! the router probabilities (`topk_select_*`, cuda/gating.cu) and the dispatch (the three
//! `permute_dispatch_*` kernels of cuda/permute.cu, `enqueue_dispatch`), whose index buffers the
//! permute, combine and grouped-GEMM launches then read in place.
//!
//! Nothing here downloads except [`DeviceDispatch::counts`], once and only when asked: the host
//! learns the per-expert token counts when it needs them (FLOP accounting and routing statistics
//! at the end of a forward pass, which experts get a gradient in the backward), not in the middle
//! of a layer, so an MoE layer's kernels queue ahead of the GPU like every other op's.

use std::sync::OnceLock;

use super::super::abi::*;
use super::super::gpu::{GBuf, Gpu};
use super::super::moe_exec::{enqueue_dispatch, Exec};
use super::super::moe_ops::{check_gating, dispatch_params, dispatch_scratch_len, select_geometry, Geometry, KernelFloat, POISON_I32};
use super::{by_dtype, same_gpu, tensor_of, whole_buf};
use crate::moe::Dispatch;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Each token's chosen experts `[T, k]` (descending probability, ties to the lower index), in a
/// device buffer.
pub struct DeviceIds {
    gpu: Gpu,
    tokens: usize,
    k: usize,
    experts: usize,
    idx: GBuf<i32>,
}

impl std::fmt::Debug for DeviceIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceIds({} tokens x {} of {} experts on {})", self.tokens, self.k, self.experts, self.gpu.device())
    }
}

impl DeviceIds {
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn experts(&self) -> usize {
        self.experts
    }

    /// The ids on the host (a download: waits for the device).
    pub fn to_host(&self) -> Result<Vec<u32>> {
        let ids = download_checked(
            &self.gpu,
            &self.idx,
            self.tokens * self.k,
            self.experts.saturating_sub(1),
            "the top-k kernel",
            "an expert id",
        )?;
        Ok(ids.into_iter().map(|e| e as u32).collect())
    }
}

/// The first `n` entries of an index buffer on the host, each checked to lie in `0..=limit`: a
/// kernel that left one outside is an error naming `who` and `what`, not a wrong index later.
fn download_checked(gpu: &Gpu, buf: &GBuf<i32>, n: usize, limit: usize, who: &str, what: &str) -> Result<Vec<usize>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut v = gpu.download(buf)?;
    v.truncate(n);
    v.into_iter()
        .map(|x| usize::try_from(x).ok().filter(|&x| x <= limit))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| Error::Cuda(format!("{who} left {what} out of range")))
}

/// Top-k of `probs: [T, E]` on its device: `(ids, gates [T, k])`, the gates in the probabilities'
/// dtype (renormalised over the chosen k with `renormalize`). The same choice and gate values as
/// the CPU's [`crate::moe::gating::topk_fwd`] on the same probabilities.
pub fn topk_select(probs: &Tensor, k: usize, renormalize: bool) -> Result<(DeviceIds, Tensor)> {
    const OP: &str = "topk_gating";
    let gpu = same_gpu(OP, &[probs])?;
    let (t, e) = (probs.shape()[0], probs.shape()[1]);
    let (ti, ei, ki) = check_gating(OP, t, e, k)?;
    by_dtype!(OP, probs.dtype(), T => {
        let pb = whole_buf::<T>(OP, probs)?;
        let mut idx = gpu.uninit::<i32>(t * k, POISON_I32)?;
        let mut gates = gpu.uninit::<T>(t * k, T::poison())?;
        if t > 0 {
            let p = TopkSelectParams {
                probs: gpu.addr(&*pb),
                topk_idx: gpu.addr_mut(&mut idx),
                gates: gpu.addr_mut(&mut gates),
                tokens: ti,
                experts: ei,
                k: ki,
                renorm: renormalize as i32,
                ..Default::default()
            };
            // SAFETY: probs is [T, E] (whole buffer), idx and gates are [T, k].
            unsafe { gpu.enqueue("gating.cu", &format!("topk_select_fwd_{}", T::SUFFIX), select_geometry(t), &p)? };
        }
        let gates = tensor_of(&gpu, gates, &[t, k]);
        Ok((DeviceIds { gpu, tokens: t, k, experts: e, idx }, gates))
    })
}

/// Gradient of the probabilities `[T, E]` from the gates' gradient `g: [T, k]`
/// ([`crate::moe::gating::topk_bwd`] on the device), in the probabilities' dtype.
pub fn topk_select_backward(probs: &Tensor, ids: &DeviceIds, gates: &Tensor, g: &Tensor, renormalize: bool) -> Result<Tensor> {
    const OP: &str = "topk_gating backward";
    let gpu = same_gpu(OP, &[probs, gates, g])?;
    let (t, e, k) = (ids.tokens, ids.experts, ids.k);
    if probs.shape() != [t, e] || gates.shape() != [t, k] || g.shape() != [t, k] {
        return Err(Error::ShapeMismatch { op: OP, lhs: probs.shape().to_vec(), rhs: g.shape().to_vec() });
    }
    let (ti, ei, ki) = check_gating(OP, t, e, k)?;
    by_dtype!(OP, probs.dtype(), T => {
        let (pb, wb, gb) = (whole_buf::<T>(OP, probs)?, whole_buf::<T>(OP, gates)?, whole_buf::<T>(OP, g)?);
        let mut dp = gpu.uninit::<T>(t * e, T::poison())?;
        if t > 0 {
            let p = TopkSelectParams {
                probs: gpu.addr(&*pb),
                topk_idx: gpu.addr(&ids.idx),
                gates: gpu.addr(&*wb),
                dgates: gpu.addr(&*gb),
                dprobs: gpu.addr_mut(&mut dp),
                tokens: ti,
                experts: ei,
                k: ki,
                renorm: renormalize as i32,
            };
            // SAFETY: probs and dp are [T, E], ids, gates and g [T, k]; ids come from topk_select
            // (distinct, in range), and the kernel skips any that are not.
            unsafe { gpu.enqueue("gating.cu", &format!("topk_select_bwd_{}", T::SUFFIX), select_geometry(t), &p)? };
        }
        Ok(tensor_of(&gpu, dp, &[t, e]))
    })
}

/// The dispatch of device ids (a stable counting sort by expert, no capacity limit, so every pair
/// keeps a row and `rows = T * k`): per-expert counts and segment starts, each pair's row and each
/// row's token, in device buffers.
pub struct DeviceDispatch {
    gpu: Gpu,
    tokens: usize,
    k: usize,
    experts: usize,
    /// `[E]`, `[E + 1]`, `[T * k]`, `[T * k]` (the layout of [`Dispatch`]).
    counts: GBuf<i32>,
    offsets: GBuf<i32>,
    pos: GBuf<i32>,
    src_row: GBuf<i32>,
    /// `counts` on the host, downloaded at the first [`DeviceDispatch::counts`].
    host_counts: OnceLock<Vec<usize>>,
}

impl std::fmt::Debug for DeviceDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceDispatch({} tokens x {} over {} experts on {})", self.tokens, self.k, self.experts, self.gpu.device())
    }
}

impl DeviceDispatch {
    /// Queues the dispatch kernels on `ids` (nothing waits for them).
    pub fn new(ids: &DeviceIds) -> Result<Self> {
        let (gpu, t, k, e) = (&ids.gpu, ids.tokens, ids.k, ids.experts);
        let pairs = t * k;
        let mut dp = dispatch_params(t, k, e, 1)?;
        // No pairs: no kernels, and every count and offset is zero.
        let per_expert = |n: usize| if pairs == 0 { gpu.zeros::<i32>(n) } else { gpu.uninit::<i32>(n, POISON_I32) };
        let mut d = DeviceDispatch {
            gpu: gpu.clone(),
            tokens: t,
            k,
            experts: e,
            counts: per_expert(e)?,
            offsets: per_expert(e + 1)?,
            pos: gpu.uninit::<i32>(pairs, POISON_I32)?,
            src_row: gpu.uninit::<i32>(pairs, POISON_I32)?,
            host_counts: OnceLock::new(),
        };
        if pairs == 0 {
            return Ok(d);
        }
        // Freed after the queued kernels (stream-ordered on a device; the emulator runs them now).
        let mut scratch = gpu.uninit::<i32>(dispatch_scratch_len(&dp), POISON_I32)?;
        dp.topk_idx = gpu.addr(&ids.idx);
        dp.counts = gpu.addr_mut(&mut d.counts);
        dp.offsets = gpu.addr_mut(&mut d.offsets);
        dp.pos = gpu.addr_mut(&mut d.pos);
        dp.src_row = gpu.addr_mut(&mut d.src_row);
        dp.block_rows = gpu.addr_mut(&mut scratch);
        // SAFETY: the buffers have the sizes dispatch_params (pad_to 1: rows_cap = T * k) and
        // dispatch_scratch_len give; the ids are [T * k] experts in range (topk_select).
        unsafe { enqueue_dispatch(gpu, &dp)? };
        Ok(d)
    }

    pub fn tokens(&self) -> usize {
        self.tokens
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn experts(&self) -> usize {
        self.experts
    }

    /// Rows of the permuted matrix: every pair keeps one.
    pub fn rows(&self) -> usize {
        self.tokens * self.k
    }

    pub(crate) fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// `[E + 1]` segment starts, `[T * k]` row of each pair, `[T * k]` token of each row.
    pub(crate) fn offsets_buf(&self) -> &GBuf<i32> {
        &self.offsets
    }

    pub(crate) fn pos_buf(&self) -> &GBuf<i32> {
        &self.pos
    }

    pub(crate) fn src_row_buf(&self) -> &GBuf<i32> {
        &self.src_row
    }

    /// Pairs routed to each expert `[E]`: downloaded at the first call (waiting for the device),
    /// then kept.
    pub fn counts(&self) -> Result<&[usize]> {
        if let Some(c) = self.host_counts.get() {
            return Ok(c);
        }
        let c = download_checked(&self.gpu, &self.counts, self.experts, self.rows(), "the dispatch kernels", "an expert count")?;
        Ok(self.host_counts.get_or_init(|| c))
    }

    /// The routed fraction of pairs of each expert, `counts / (T * k)`, as an `[E]` f32 tensor on
    /// the device (the load-balancing loss's `f_i`, with no trip to the host).
    pub fn fractions(&self) -> Result<Tensor> {
        let e = self.experts;
        let mut frac = self.gpu.uninit::<f32>(e, f32::NAN)?;
        let p = DispatchFractionsParams {
            counts: self.gpu.addr(&self.counts),
            frac: self.gpu.addr_mut(&mut frac),
            experts: i32::try_from(e).map_err(|_| Error::invalid("dispatch fractions", "too many experts"))?,
            pairs: i32::try_from(self.rows()).map_err(|_| Error::invalid("dispatch fractions", "too many pairs"))?,
        };
        let g = Geometry { grid: 1, block: AUTOMOE_DISPATCH_THREADS, smem_bytes: 0 };
        // SAFETY: counts and frac are [E] buffers of this backend.
        unsafe { self.gpu.enqueue("permute.cu", "dispatch_fractions_f32", g, &p)? };
        Ok(tensor_of(&self.gpu, frac, &[e]))
    }

    /// The whole dispatch on the host, as the CPU builds it (tests and diagnostics; downloads).
    pub fn to_host(&self) -> Result<Dispatch> {
        let counts = self.counts()?.to_vec();
        let rows = self.rows();
        let down =
            |b: &GBuf<i32>, n: usize, limit: usize, what: &str| download_checked(&self.gpu, b, n, limit, "the dispatch kernels", what);
        let offsets = down(&self.offsets, self.experts + 1, rows, "an offset")?;
        let pos = down(&self.pos, rows, rows.saturating_sub(1), "a row")?;
        let src_row = down(&self.src_row, rows, self.tokens.saturating_sub(1), "a token")?;
        Ok(Dispatch {
            tokens: self.tokens,
            k: self.k,
            experts: self.experts,
            routed: counts.clone(),
            counts,
            offsets,
            pos: pos.into_iter().map(|p| p as u32).collect(),
            src_row: src_row.into_iter().map(|r| r as u32).collect(),
        })
    }
}
