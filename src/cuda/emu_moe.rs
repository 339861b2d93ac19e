//! [`MoeKernels`] on the SIMT emulator: host vectors in, the real kernels run on CPU fibers.

use super::abi::*;
use super::emu::{addr, addr_mut, launch, Kernel, LaunchCfg};
use super::emu::{
    COMBINE_BWD_BF16, COMBINE_BWD_F32, COMBINE_FWD_BF16, COMBINE_FWD_F32, PERMUTE_BWD_BF16, PERMUTE_BWD_F32, PERMUTE_DISPATCH_I32,
    PERMUTE_FWD_BF16, PERMUTE_FWD_F32, TOPK_GATING_BWD_BF16, TOPK_GATING_BWD_F32, TOPK_GATING_FWD_BF16, TOPK_GATING_FWD_F32,
};
use super::moe_ops::*;
use crate::moe::reference::Dispatch;
use crate::Result;

/// The emulator backend. `seed` != 0 reshuffles fiber order after every barrier (see [`LaunchCfg`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Emu {
    pub seed: u32,
}

fn pick<T: KernelFloat, P>(f32k: Kernel<P>, bf16k: Kernel<P>) -> Kernel<P> {
    if T::SUFFIX == "f32" {
        f32k
    } else {
        bf16k
    }
}

impl Emu {
    fn cfg(&self, g: Geometry) -> LaunchCfg {
        LaunchCfg { seed: self.seed, ..LaunchCfg::from(g) }
    }
}

impl MoeKernels for Emu {
    fn backend(&self) -> String {
        "emulator".into()
    }

    fn topk_gating_fwd<T: KernelFloat>(&self, logits: &[T], t: usize, e: usize, k: usize, renorm: bool) -> Result<GatingOut> {
        const OP: &str = "topk_gating_fwd";
        let (ti, ei, ki) = check_gating(OP, t, e, k)?;
        check_len(OP, "logits", logits.len(), t * e)?;
        let mut out = GatingOut { idx: vec![POISON_I32; t * k], w: vec![f32::NAN; t * k], probs: vec![f32::NAN; t * e] };
        if t == 0 {
            return Ok(out);
        }
        let p = TopkGatingFwdParams {
            logits: addr(logits),
            probs: addr_mut(&mut out.probs),
            topk_idx: addr_mut(&mut out.idx),
            topk_w: addr_mut(&mut out.w),
            tokens: ti,
            experts: ei,
            k: ki,
            renorm: renorm as i32,
        };
        // SAFETY: every buffer was checked or allocated with the [t, e] / [t, k] sizes in `p`.
        unsafe { launch(pick::<T, _>(TOPK_GATING_FWD_F32, TOPK_GATING_FWD_BF16), &self.cfg(warp_per_item(t)), &p)? };
        Ok(out)
    }

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
    ) -> Result<Vec<T>> {
        const OP: &str = "topk_gating_bwd";
        let (ti, ei, ki) = check_gating(OP, t, e, k)?;
        check_len(OP, "probs", probs.len(), t * e)?;
        check_topk_idx(OP, idx, t, e, k)?;
        check_len(OP, "topk_w", w.len(), t * k)?;
        check_len(OP, "dw", dw.len(), t * k)?;
        let mut dlogits = vec![T::poison(); t * e];
        if t == 0 {
            return Ok(dlogits);
        }
        let p = TopkGatingBwdParams {
            probs: addr(probs),
            topk_idx: addr(idx),
            topk_w: addr(w),
            dw: addr(dw),
            dlogits: addr_mut(&mut dlogits),
            tokens: ti,
            experts: ei,
            k: ki,
            renorm: renorm as i32,
        };
        // SAFETY: sizes checked above against the shapes in `p`; expert ids checked in range.
        unsafe { launch(pick::<T, _>(TOPK_GATING_BWD_F32, TOPK_GATING_BWD_BF16), &self.cfg(warp_per_item(t)), &p)? };
        Ok(dlogits)
    }

    fn dispatch(&self, idx: &[i32], t: usize, k: usize, e: usize, pad_to: usize) -> Result<Dispatch> {
        let mut p = dispatch_params(t, k, e, pad_to)?;
        check_topk_idx("dispatch", idx, t, e, k)?;
        let mut counts = vec![POISON_I32; e];
        let mut offsets = vec![POISON_I32; e + 1];
        let mut pos = vec![POISON_I32; t * k];
        let mut src_row = vec![POISON_I32; p.rows_cap as usize];
        p.topk_idx = addr(idx);
        p.counts = addr_mut(&mut counts);
        p.offsets = addr_mut(&mut offsets);
        p.pos = addr_mut(&mut pos);
        p.src_row = addr_mut(&mut src_row);
        // SAFETY: buffers allocated with exactly the sizes dispatch_params put in `p`.
        unsafe { launch(PERMUTE_DISPATCH_I32, &self.cfg(dispatch_geometry()), &p)? };
        let rows = offsets[e].clamp(0, p.rows_cap) as usize;
        src_row.truncate(rows);
        Ok(Dispatch { counts, offsets, pos, src_row })
    }

    fn permute_fwd<T: KernelFloat>(&self, x: &[T], src_row: &[i32], t: usize, d: usize) -> Result<Vec<T>> {
        const OP: &str = "permute_fwd";
        let s = check_rows_shape(OP, src_row.len() * d, t, 1, d)?;
        check_len(OP, "x", x.len(), t * d)?;
        check_rows(OP, "src_row", src_row, t, true)?;
        let mut xp = vec![T::poison(); src_row.len() * d];
        if src_row.is_empty() {
            return Ok(xp);
        }
        let p = PermuteFwdParams { x: addr(x), src_row: addr(src_row), xp: addr_mut(&mut xp), rows: s.rows, d: s.d };
        // SAFETY: x is [t, d], src_row entries are -1 or < t, xp is [rows, d].
        unsafe { launch(pick::<T, _>(PERMUTE_FWD_F32, PERMUTE_FWD_BF16), &self.cfg(warp_per_item(src_row.len())), &p)? };
        Ok(xp)
    }

    fn permute_bwd<T: KernelFloat>(&self, dxp: &[T], pos: &[i32], t: usize, k: usize, d: usize) -> Result<Vec<T>> {
        const OP: &str = "permute_bwd";
        let s = check_rows_shape(OP, dxp.len(), t, k, d)?;
        check_len(OP, "pos", pos.len(), t * k)?;
        check_rows(OP, "pos", pos, s.rows as usize, false)?;
        let mut dx = vec![T::poison(); t * d];
        if t == 0 {
            return Ok(dx);
        }
        let p = PermuteBwdParams { dxp: addr(dxp), pos: addr(pos), dx: addr_mut(&mut dx), tokens: s.t, k: s.k, d: s.d, reserved: 0 };
        // SAFETY: dxp is [rows, d] with every pos < rows, dx is [t, d].
        unsafe { launch(pick::<T, _>(PERMUTE_BWD_F32, PERMUTE_BWD_BF16), &self.cfg(warp_per_item(t)), &p)? };
        Ok(dx)
    }

    fn combine_fwd<T: KernelFloat>(&self, yp: &[T], pos: &[i32], w: &[f32], t: usize, k: usize, d: usize) -> Result<Vec<T>> {
        const OP: &str = "combine_fwd";
        let s = check_rows_shape(OP, yp.len(), t, k, d)?;
        check_len(OP, "pos", pos.len(), t * k)?;
        check_len(OP, "w", w.len(), t * k)?;
        check_rows(OP, "pos", pos, s.rows as usize, false)?;
        let mut y = vec![T::poison(); t * d];
        if t == 0 {
            return Ok(y);
        }
        let p =
            CombineFwdParams { yp: addr(yp), pos: addr(pos), w: addr(w), y: addr_mut(&mut y), tokens: s.t, k: s.k, d: s.d, reserved: 0 };
        // SAFETY: yp is [rows, d] with every pos < rows; w is [t, k]; y is [t, d].
        unsafe { launch(pick::<T, _>(COMBINE_FWD_F32, COMBINE_FWD_BF16), &self.cfg(warp_per_item(t)), &p)? };
        Ok(y)
    }

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
    ) -> Result<(Vec<T>, Vec<f32>)> {
        const OP: &str = "combine_bwd";
        let s = check_rows_shape(OP, yp.len(), t, k, d)?;
        check_len(OP, "dy", dy.len(), t * d)?;
        check_len(OP, "pos", pos.len(), t * k)?;
        check_len(OP, "w", w.len(), t * k)?;
        check_len(OP, "src_row", src_row.len(), s.rows as usize)?;
        check_rows(OP, "pos", pos, s.rows as usize, false)?;
        let mut dyp = vec![T::poison(); yp.len()];
        let mut dw = vec![f32::NAN; t * k];
        let items = t.max(s.rows as usize);
        if items == 0 {
            return Ok((dyp, dw));
        }
        let p = CombineBwdParams {
            dy: addr(dy),
            yp: addr(yp),
            pos: addr(pos),
            w: addr(w),
            src_row: addr(src_row),
            dyp: addr_mut(&mut dyp),
            dw: addr_mut(&mut dw),
            tokens: s.t,
            k: s.k,
            d: s.d,
            rows: s.rows,
        };
        // SAFETY: dy [t, d], yp and dyp [rows, d] with every pos < rows, w and dw [t, k], src_row [rows].
        unsafe { launch(pick::<T, _>(COMBINE_BWD_F32, COMBINE_BWD_BF16), &self.cfg(warp_per_item(items)), &p)? };
        Ok((dyp, dw))
    }
}
