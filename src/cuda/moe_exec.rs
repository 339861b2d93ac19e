//! One implementation of [`MoeKernels`] for every backend: a backend only says how to move buffers
//! and launch a kernel by name ([`Exec`]); validation, poisoning, parameter structs and launch
//! geometry are written once here, so the emulator and a device run the exact same launches.

use super::abi::*;
use super::moe_ops::*;
use crate::moe::reference::Dispatch;
use crate::Result;

/// Element types a backend buffer can hold.
pub trait Elem: bytemuck::Pod + cudarc::driver::DeviceRepr + Send + Sync + 'static {}
impl<T: bytemuck::Pod + cudarc::driver::DeviceRepr + Send + Sync + 'static> Elem for T {}

/// Parameter structs of cuda/abi.h, each knowing its emulator kernels by name.
pub trait KernelParams: bytemuck::Pod + cudarc::driver::DeviceRepr {
    fn emu_kernel(name: &str) -> Option<super::emu::Kernel<Self>>;
}

/// What a backend provides: buffers, addresses, and a launch by kernel name.
pub trait Exec {
    type Buf<T: Elem>;
    fn backend_name(&self) -> String;
    fn upload<T: Elem>(&self, host: &[T]) -> Result<Self::Buf<T>>;
    fn download<T: Elem>(&self, buf: &Self::Buf<T>) -> Result<Vec<T>>;
    fn addr<T: Elem>(&self, buf: &Self::Buf<T>) -> automoe_dptr;
    fn addr_mut<T: Elem>(&self, buf: &mut Self::Buf<T>) -> automoe_dptr;
    /// Blocks a persistent kernel (the grouped GEMMs) should launch when `per_sm` of its blocks fit
    /// on one multiprocessor: enough to fill the machine, no more (a block that does not fit would
    /// wait for a whole earlier block's tile loop). The emulator's small fixed count makes each
    /// block loop over several tiles in the tests.
    fn persistent_blocks(&self, _per_sm: u32) -> u32 {
        3
    }
    /// Whether kernels using Hopper's warpgroup MMA (`wgmma`, sm_90a) can run: the emulator runs
    /// them through its twins; a device must be sm_90a.
    fn has_wgmma(&self) -> bool {
        true
    }
    /// Runs `name` (an entry point of cuda/`file`) and waits for it to finish.
    ///
    /// # Safety
    /// Every address in `params` must come from this backend's live buffers, large enough for every
    /// access the kernel makes for the shapes in `params`.
    unsafe fn launch<P: KernelParams>(&self, file: &str, name: &str, g: Geometry, params: &P) -> Result<()>;
    /// Like [`Exec::launch`] but without waiting: a device queues the kernel on its stream (errors
    /// surface at the next synchronising call, e.g. a download), so a chain of kernels runs with no
    /// host round trip. The emulator runs it at once.
    ///
    /// # Safety
    /// As for [`Exec::launch`], and the buffers must outlive the queued work (device buffers are
    /// freed in stream order, so dropping them after queuing is fine).
    unsafe fn enqueue<P: KernelParams>(&self, file: &str, name: &str, g: Geometry, params: &P) -> Result<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.launch(file, name, g, params) }
    }
}

/// Queues the three dispatch kernels (count, scan, assign; see cuda/abi.h) on `x`, with no host sync.
///
/// # Safety
/// Every address in `p` must come from `x`'s live buffers sized for the shapes in `p`: `topk_idx`
/// and `pos` \[pairs\], `counts` \[E\], `offsets` \[E+1\], `src_row` \[rows_cap\] and `block_rows`
/// \[[`dispatch_scratch_len`]\], living until the queued kernels have run.
pub unsafe fn enqueue_dispatch<X: Exec>(x: &X, p: &DispatchParams) -> Result<()> {
    for (name, g) in dispatch_launches(p) {
        // SAFETY: forwarded from this function's contract.
        unsafe { x.enqueue("permute.cu", name, g, p)? };
    }
    Ok(())
}

fn poisoned<X: Exec, T: Elem>(x: &X, n: usize, v: T) -> Result<X::Buf<T>> {
    x.upload(&vec![v; n])
}

impl<X: Exec> MoeKernels for X {
    fn backend(&self) -> String {
        self.backend_name()
    }

    fn topk_gating_fwd<T: KernelFloat>(&self, logits: &[T], t: usize, e: usize, k: usize, renorm: bool) -> Result<GatingOut> {
        const OP: &str = "topk_gating_fwd";
        let (ti, ei, ki) = check_gating(OP, t, e, k)?;
        check_len(OP, "logits", logits.len(), t * e)?;
        if t == 0 {
            return Ok(GatingOut { idx: vec![], w: vec![], probs: vec![] });
        }
        let l = self.upload(logits)?;
        let mut probs = poisoned(self, t * e, f32::NAN)?;
        let mut idx = poisoned(self, t * k, POISON_I32)?;
        let mut w = poisoned(self, t * k, f32::NAN)?;
        let p = TopkGatingFwdParams {
            logits: self.addr(&l),
            probs: self.addr_mut(&mut probs),
            topk_idx: self.addr_mut(&mut idx),
            topk_w: self.addr_mut(&mut w),
            tokens: ti,
            experts: ei,
            k: ki,
            renorm: renorm as i32,
        };
        // SAFETY: buffers were checked or allocated with the [t, e] / [t, k] sizes in `p`.
        unsafe { self.launch("gating.cu", &gating_kernel::<T>("fwd", e), gating_geometry(t, e), &p)? };
        Ok(GatingOut { idx: self.download(&idx)?, w: self.download(&w)?, probs: self.download(&probs)? })
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
        if t == 0 {
            return Ok(vec![]);
        }
        let (pb, ib, wb, dwb) = (self.upload(probs)?, self.upload(idx)?, self.upload(w)?, self.upload(dw)?);
        let mut out = poisoned(self, t * e, T::poison())?;
        let p = TopkGatingBwdParams {
            probs: self.addr(&pb),
            topk_idx: self.addr(&ib),
            topk_w: self.addr(&wb),
            dw: self.addr(&dwb),
            dlogits: self.addr_mut(&mut out),
            tokens: ti,
            experts: ei,
            k: ki,
            renorm: renorm as i32,
        };
        // SAFETY: sizes checked above against the shapes in `p`; expert ids checked in range.
        unsafe { self.launch("gating.cu", &gating_kernel::<T>("bwd", e), gating_geometry(t, e), &p)? };
        self.download(&out)
    }

    fn dispatch(&self, idx: &[i32], t: usize, k: usize, e: usize, pad_to: usize) -> Result<Dispatch> {
        let mut p = dispatch_params(t, k, e, pad_to)?;
        check_topk_idx("dispatch", idx, t, e, k)?;
        // A zero-length upload is still a valid (dangling) address the kernel never reads.
        let ib = self.upload(idx)?;
        let mut counts = poisoned(self, e, POISON_I32)?;
        let mut offsets = poisoned(self, e + 1, POISON_I32)?;
        let mut pos = poisoned(self, t * k, POISON_I32)?;
        let mut src_row = poisoned(self, (p.rows_cap as usize).max(1), POISON_I32)?;
        let mut scratch = poisoned(self, dispatch_scratch_len(&p), POISON_I32)?;
        p.topk_idx = self.addr(&ib);
        p.counts = self.addr_mut(&mut counts);
        p.offsets = self.addr_mut(&mut offsets);
        p.pos = self.addr_mut(&mut pos);
        p.src_row = self.addr_mut(&mut src_row);
        p.block_rows = self.addr_mut(&mut scratch);
        // SAFETY: buffers allocated with the sizes dispatch_params and dispatch_scratch_len give;
        // the downloads below wait for the queued kernels.
        unsafe { enqueue_dispatch(self, &p)? };
        let offsets = self.download(&offsets)?;
        let mut src_row = self.download(&src_row)?;
        src_row.truncate(offsets[e].clamp(0, p.rows_cap) as usize);
        Ok(Dispatch { counts: self.download(&counts)?, offsets, pos: self.download(&pos)?, src_row })
    }

    fn permute_fwd<T: KernelFloat>(&self, x: &[T], src_row: &[i32], t: usize, d: usize) -> Result<Vec<T>> {
        const OP: &str = "permute_fwd";
        let s = check_rows_shape(OP, src_row.len() * d, t, 1, d)?;
        check_len(OP, "x", x.len(), t * d)?;
        check_rows(OP, "src_row", src_row, t, true)?;
        if src_row.is_empty() {
            return Ok(vec![]);
        }
        let (xb, sb) = (self.upload(x)?, self.upload(src_row)?);
        let mut xp = poisoned(self, src_row.len() * d, T::poison())?;
        let p = PermuteFwdParams { x: self.addr(&xb), src_row: self.addr(&sb), xp: self.addr_mut(&mut xp), rows: s.rows, d: s.d };
        // SAFETY: x is [t, d], src_row entries are -1 or < t, xp is [rows, d].
        unsafe { self.launch("permute.cu", &format!("permute_fwd_{}", T::SUFFIX), warp_per_item(src_row.len()), &p)? };
        self.download(&xp)
    }

    fn permute_bwd<T: KernelFloat>(&self, dxp: &[T], pos: &[i32], t: usize, k: usize, d: usize) -> Result<Vec<T>> {
        const OP: &str = "permute_bwd";
        let s = check_rows_shape(OP, dxp.len(), t, k, d)?;
        check_len(OP, "pos", pos.len(), t * k)?;
        check_rows(OP, "pos", pos, s.rows as usize, false)?;
        if t == 0 {
            return Ok(vec![]);
        }
        let (db, pb) = (self.upload(dxp)?, self.upload(pos)?);
        let mut dx = poisoned(self, t * d, T::poison())?;
        let p = PermuteBwdParams {
            dxp: self.addr(&db),
            pos: self.addr(&pb),
            dx: self.addr_mut(&mut dx),
            tokens: s.t,
            k: s.k,
            d: s.d,
            reserved: 0,
        };
        // SAFETY: dxp is [rows, d] with every pos < rows, dx is [t, d].
        unsafe { self.launch("permute.cu", &format!("permute_bwd_{}", T::SUFFIX), warp_per_item(t), &p)? };
        self.download(&dx)
    }

    fn combine_fwd<T: KernelFloat>(&self, yp: &[T], pos: &[i32], w: &[f32], t: usize, k: usize, d: usize) -> Result<Vec<T>> {
        const OP: &str = "combine_fwd";
        let s = check_rows_shape(OP, yp.len(), t, k, d)?;
        check_len(OP, "pos", pos.len(), t * k)?;
        check_len(OP, "w", w.len(), t * k)?;
        check_rows(OP, "pos", pos, s.rows as usize, false)?;
        if t == 0 {
            return Ok(vec![]);
        }
        let (yb, pb, wb) = (self.upload(yp)?, self.upload(pos)?, self.upload(w)?);
        let mut y = poisoned(self, t * d, T::poison())?;
        let p = CombineFwdParams {
            yp: self.addr(&yb),
            pos: self.addr(&pb),
            w: self.addr(&wb),
            y: self.addr_mut(&mut y),
            tokens: s.t,
            k: s.k,
            d: s.d,
            reserved: 0,
        };
        // SAFETY: yp is [rows, d] with every pos < rows; w is [t, k]; y is [t, d].
        unsafe { self.launch("permute.cu", &format!("combine_fwd_{}", T::SUFFIX), warp_per_item(t), &p)? };
        self.download(&y)
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
        check_rows(OP, "src_row", src_row, t, true)?;
        let items = t.max(s.rows as usize);
        if items == 0 {
            return Ok((vec![], vec![]));
        }
        let (dyb, yb, pb, wb, sb) = (self.upload(dy)?, self.upload(yp)?, self.upload(pos)?, self.upload(w)?, self.upload(src_row)?);
        let mut dyp = poisoned(self, yp.len(), T::poison())?;
        let mut dw = poisoned(self, t * k, f32::NAN)?;
        let p = CombineBwdParams {
            dy: self.addr(&dyb),
            yp: self.addr(&yb),
            pos: self.addr(&pb),
            w: self.addr(&wb),
            src_row: self.addr(&sb),
            dyp: self.addr_mut(&mut dyp),
            dw: self.addr_mut(&mut dw),
            tokens: s.t,
            k: s.k,
            d: s.d,
            rows: s.rows,
        };
        // SAFETY: dy [t, d], yp and dyp [rows, d] with every pos < rows, w and dw [t, k], src_row [rows].
        unsafe { self.launch("permute.cu", &format!("combine_bwd_{}", T::SUFFIX), warp_per_item(items), &p)? };
        Ok((self.download(&dyp)?, self.download(&dw)?))
    }
}
