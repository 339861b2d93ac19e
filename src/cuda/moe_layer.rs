//! The heterogeneous MoE FFN layer end to end on a CUDA backend ([`Exec`]: the emulator or a
//! device), forward and backward, computing what [`crate::moe::moe_forward`] computes on the CPU
//! (ReLU experts, no capacity limit), in f32 (CUDA-core GEMMs) or bf16 (tensor-core GEMMs; weights
//! and activations in bf16, every gradient of a weight or bias accumulated in f32):
//!
//! router GEMM (+bias) → top-k gating → dispatch → permute → grouped fc1 GEMM (+bias, ReLU) →
//! grouped fc2 GEMM (+bias) → combine; backward: combine → grouped fc2 dgrad (ReLU mask fused) and
//! wgrad → bias column sums → grouped fc1 dgrad and wgrad → permute backward → gating backward →
//! router wgrad, bias sums and dgrad (accumulated into dx).
//!
//! Everything between the input upload and the output download stays on the device: the grouped
//! GEMMs' problem lists are built by `grouped_gemm_plan_i32` from the dispatch kernel's offsets,
//! so the host never reads the token counts. Weights stay at their max size ([n, h_max, d_max]
//! per side) and are read as front slices through the parent's leading dimension; their gradients
//! are accumulated (deterministically) into full-size buffers in the same layout.

use super::abi::*;
use super::grouped_gemm::{dbias, group, plan, run, GemmStage};
use super::moe_exec::{enqueue_dispatch, Exec};
use super::moe_ops::{dispatch_params, dispatch_scratch_len, gating_geometry, gating_kernel, warp_per_item, KernelFloat};
use crate::autograd::ParamStore;
use crate::moe::{Activation, MoeOptions, MoeParams, MoeSubnet};
use crate::{Error, Result};

const OP: &str = "cuda moe layer";

/// One layer's parameters on the device, for one subnet choice; `T` is the element type of the
/// weights and activations (biases and gradients are f32).
pub struct ExecMoeLayer<'x, X: Exec, T: KernelFloat = f32> {
    x: &'x X,
    sub: MoeSubnet,
    renorm: bool,
    d_max: usize,
    h_max: usize,
    n_max: usize,
    /// `[n_max, d_max]`, `[n_max]`
    router_w: X::Buf<T>,
    router_b: X::Buf<f32>,
    /// `[n, h_max, d_max]`, `[n, h_max]`, `[n, d_max, h_max]`, `[n, d_max]` (the subnet's experts).
    fc1_w: X::Buf<T>,
    fc1_b: X::Buf<f32>,
    fc2_w: X::Buf<T>,
    fc2_b: X::Buf<f32>,
}

/// What the forward keeps on the device for the backward.
pub struct ExecMoeSaved<X: Exec, T: KernelFloat = f32> {
    pub t: usize,
    /// `[T, d]` host copy of the output.
    pub y: Vec<f32>,
    x: X::Buf<T>,
    probs: X::Buf<f32>,
    idx: X::Buf<i32>,
    w: X::Buf<f32>,
    offsets: X::Buf<i32>,
    pos: X::Buf<i32>,
    src_row: X::Buf<i32>,
    xp: X::Buf<T>,
    a1: X::Buf<T>,
    yp: X::Buf<T>,
}

/// Gradients of one backward, full-size (zero outside the slices the subnet used).
#[derive(Clone, Debug)]
pub struct ExecMoeGrads {
    /// `[T, d]`
    pub dx: Vec<f32>,
    /// `[n_max, d_max]`, `[n_max]`
    pub router_w: Vec<f32>,
    pub router_b: Vec<f32>,
    /// Per expert of the subnet: `[h_max, d_max]`, `[h_max]`, `[d_max, h_max]`, `[d_max]`.
    pub fc1_w: Vec<Vec<f32>>,
    pub fc1_b: Vec<Vec<f32>>,
    pub fc2_w: Vec<Vec<f32>>,
    pub fc2_b: Vec<Vec<f32>>,
}

/// Address `elems` elements of type `E` past `base`.
fn at<E>(base: automoe_dptr, elems: usize) -> automoe_dptr {
    base + (elems * std::mem::size_of::<E>()) as automoe_dptr
}

fn zeros<X: Exec, E: KernelFloat>(x: &X, n: usize) -> Result<X::Buf<E>> {
    x.upload(&vec![E::from_f32(0.0); n])
}

fn to_t<T: KernelFloat>(v: &[f32]) -> Vec<T> {
    v.iter().map(|&f| T::from_f32(f)).collect()
}

fn param_f32(store: &ParamStore, id: crate::autograd::ParamId) -> Result<Vec<f32>> {
    store.value(id).to_f32_vec()
}

impl<'x, X: Exec, T: KernelFloat> ExecMoeLayer<'x, X, T> {
    /// Uploads the parameters of `p` that subnet `sub` uses (each expert's full max-size matrices).
    pub fn new(x: &'x X, store: &ParamStore, p: &MoeParams, sub: &MoeSubnet, opts: &MoeOptions) -> Result<Self> {
        sub.validate(p)?;
        if opts.capacity_factor.is_some() || opts.balance_coef != 0.0 || opts.activation != Activation::Relu {
            return Err(Error::invalid(OP, "the CUDA layer supports ReLU experts without capacity limit or balance loss"));
        }
        let n = sub.widths.len();
        if n > super::moe_ops::MAX_EXPERTS || sub.k > super::moe_ops::MAX_K {
            return Err(Error::invalid(OP, format!("{n} experts, k = {}: beyond the kernels' limits", sub.k)));
        }
        let cat = |f: &dyn Fn(&crate::moe::ExpertParams) -> crate::autograd::ParamId| -> Result<Vec<f32>> {
            let mut v = Vec::new();
            for ep in &p.experts[..n] {
                v.extend(param_f32(store, f(ep))?);
            }
            Ok(v)
        };
        Ok(ExecMoeLayer {
            x,
            sub: sub.clone(),
            renorm: opts.renormalize,
            d_max: p.d_max,
            h_max: p.h_max,
            n_max: p.n_max,
            router_w: x.upload(&to_t::<T>(&param_f32(store, p.router_w)?))?,
            router_b: x.upload(&param_f32(store, p.router_b)?)?,
            fc1_w: x.upload(&to_t::<T>(&cat(&|e| e.fc1_w)?))?,
            fc1_b: x.upload(&cat(&|e| e.fc1_b)?)?,
            fc2_w: x.upload(&to_t::<T>(&cat(&|e| e.fc2_w)?))?,
            fc2_b: x.upload(&cat(&|e| e.fc2_b)?)?,
        })
    }

    fn dims(&self) -> (usize, usize, usize) {
        (self.sub.d, self.sub.widths.len(), self.sub.k)
    }

    /// Forward of `input: [T, d]`; the result holds `y` and the state the backward needs.
    pub fn forward(&self, input: &[f32]) -> Result<ExecMoeSaved<X, T>> {
        let x = self.x;
        let (d, n, k) = self.dims();
        let (dm, hm) = (self.d_max, self.h_max);
        if d == 0 || input.len() % d != 0 {
            return Err(Error::invalid(OP, format!("input of {} elements is not [T, {d}]", input.len())));
        }
        let t = input.len() / d;
        let r = t * k;
        let ti = i32::try_from(t).map_err(|_| Error::invalid(OP, "too many tokens"))?;
        let sfx = T::SUFFIX;
        let xb = x.upload(&to_t::<T>(input))?;
        let mut probs = zeros::<X, f32>(x, t * n)?;
        let (idx, w) = if n == 1 {
            // A 1-expert layer is the dense FFN with gate 1.0 (no router), as on the CPU.
            (x.upload(&vec![0i32; t])?, x.upload(&vec![1f32; t])?)
        } else {
            let mut logits = zeros::<X, T>(x, t * n)?;
            let g = [group(x.addr(&xb), d, x.addr(&self.router_w), dm, x.addr_mut(&mut logits), n, t, n, d)];
            let g = [GemmGroupParams { bias: x.addr(&self.router_b), ..g[0] }];
            let mut idx = x.upload(&vec![0i32; t * k])?;
            let mut w = zeros::<X, f32>(x, t * k)?;
            // SAFETY: x [T, d], Wr [n_max, d_max] read as [n, d], logits [T, n], br [n_max].
            unsafe {
                let pl = plan::<X, T>(x, GemmStage::Fwd, &g, None, t)?;
                run::<X, T>(x, &pl, 0)?;
            }
            let gp = TopkGatingFwdParams {
                logits: x.addr(&logits),
                probs: x.addr_mut(&mut probs),
                topk_idx: x.addr_mut(&mut idx),
                topk_w: x.addr_mut(&mut w),
                tokens: ti,
                experts: n as i32,
                k: k as i32,
                renorm: self.renorm as i32,
            };
            // SAFETY: logits and probs [T, n], idx and w [T, k].
            unsafe { x.enqueue("gating.cu", &gating_kernel::<T>("fwd", n), gating_geometry(t, n), &gp)? };
            (idx, w)
        };
        let mut dp = dispatch_params(t, k, n, 1)?;
        let mut counts = x.upload(&vec![0i32; n])?;
        let mut offsets = x.upload(&vec![0i32; n + 1])?;
        let mut pos = x.upload(&vec![0i32; r])?;
        let mut src_row = x.upload(&vec![-1i32; (dp.rows_cap as usize).max(1)])?;
        let mut scratch = x.upload(&vec![0i32; dispatch_scratch_len(&dp)])?;
        dp.topk_idx = x.addr(&idx);
        dp.counts = x.addr_mut(&mut counts);
        dp.offsets = x.addr_mut(&mut offsets);
        dp.pos = x.addr_mut(&mut pos);
        dp.src_row = x.addr_mut(&mut src_row);
        dp.block_rows = x.addr_mut(&mut scratch);
        // SAFETY: buffers sized by dispatch_params and dispatch_scratch_len (pad_to 1: rows_cap = T*k = R).
        unsafe { enqueue_dispatch(x, &dp)? };
        let mut xp = zeros::<X, T>(x, r * d)?;
        let pf = PermuteFwdParams { x: x.addr(&xb), src_row: x.addr(&src_row), xp: x.addr_mut(&mut xp), rows: r as i32, d: d as i32 };
        // SAFETY: x [T, d], src_row [R] in -1..T, xp [R, d].
        unsafe { x.enqueue("permute.cu", &format!("permute_fwd_{sfx}"), warp_per_item(r), &pf)? };

        // fc1: a1[:, :h_e] = relu(xp_e W1_e^T + b1_e), a1 [R, h_max].
        let mut a1 = zeros::<X, T>(x, r * hm)?;
        let mut yp = zeros::<X, T>(x, r * d)?;
        let (xpa, a1a, ypa) = (x.addr(&xp), x.addr_mut(&mut a1), x.addr_mut(&mut yp));
        let fc1: Vec<_> = (0..n)
            .map(|e| GemmGroupParams {
                bias: at::<f32>(x.addr(&self.fc1_b), e * hm),
                ..group(xpa, d, at::<T>(x.addr(&self.fc1_w), e * hm * dm), dm, a1a, hm, 0, self.sub.widths[e], d)
            })
            .collect();
        // fc2: yp_e = a1_e[:, :h_e] W2_e^T + b2_e, W2_e = fc2_e[:d, :h_e] with ld h_max.
        let fc2: Vec<_> = (0..n)
            .map(|e| GemmGroupParams {
                bias: at::<f32>(x.addr(&self.fc2_b), e * dm),
                ..group(a1a, hm, at::<T>(x.addr(&self.fc2_w), e * dm * hm), hm, ypa, d, 0, d, self.sub.widths[e])
            })
            .collect();
        // SAFETY: every segment lies in the R rows of xp, a1, yp; weights are the uploaded parents.
        unsafe {
            let p1 = plan::<X, T>(x, GemmStage::Fwd, &fc1, Some(&offsets), r)?;
            run::<X, T>(x, &p1, AUTOMOE_GEMM_RELU)?;
            let p2 = plan::<X, T>(x, GemmStage::Fwd, &fc2, Some(&offsets), r)?;
            run::<X, T>(x, &p2, 0)?;
        }
        let mut y = zeros::<X, T>(x, t * d)?;
        let cf = CombineFwdParams {
            yp: x.addr(&yp),
            pos: x.addr(&pos),
            w: x.addr(&w),
            y: x.addr_mut(&mut y),
            tokens: ti,
            k: k as i32,
            d: d as i32,
            reserved: 0,
        };
        // SAFETY: yp [R, d], pos [T*k] < R, w [T, k], y [T, d].
        unsafe { x.enqueue("permute.cu", &format!("combine_fwd_{sfx}"), warp_per_item(t), &cf)? };
        let y = x.download(&y)?.iter().map(|v| v.to_f32()).collect();
        Ok(ExecMoeSaved { t, y, x: xb, probs, idx, w, offsets, pos, src_row, xp, a1, yp })
    }

    /// Backward from `dy: [T, d]` through the state of [`Self::forward`].
    pub fn backward(&self, s: &ExecMoeSaved<X, T>, dy: &[f32]) -> Result<ExecMoeGrads> {
        let x = self.x;
        let (d, n, k) = self.dims();
        let (dm, hm, t) = (self.d_max, self.h_max, s.t);
        let r = t * k;
        if dy.len() != t * d {
            return Err(Error::invalid(OP, format!("dy has {} elements, expected {t} x {d}", dy.len())));
        }
        let sfx = T::SUFFIX;
        let dyb = x.upload(&to_t::<T>(dy))?;
        let mut dyp = zeros::<X, T>(x, r * d)?;
        let mut dw = zeros::<X, f32>(x, t * k)?;
        let cb = CombineBwdParams {
            dy: x.addr(&dyb),
            yp: x.addr(&s.yp),
            pos: x.addr(&s.pos),
            w: x.addr(&s.w),
            src_row: x.addr(&s.src_row),
            dyp: x.addr_mut(&mut dyp),
            dw: x.addr_mut(&mut dw),
            tokens: t as i32,
            k: k as i32,
            d: d as i32,
            rows: r as i32,
        };
        // SAFETY: dy [T, d], yp and dyp [R, d], pos [T*k] < R, w and dw [T, k], src_row [R].
        unsafe { x.enqueue("permute.cu", &format!("combine_bwd_{sfx}"), warp_per_item(t.max(r)), &cb)? };

        let mut g1w = zeros::<X, f32>(x, n * hm * dm)?;
        let mut g1b = zeros::<X, f32>(x, n * hm)?;
        let mut g2w = zeros::<X, f32>(x, n * dm * hm)?;
        let mut g2b = zeros::<X, f32>(x, n * dm)?;
        let mut da1 = zeros::<X, T>(x, r * hm)?;
        let mut dxp = zeros::<X, T>(x, r * d)?;
        let (dypa, a1a, xpa) = (x.addr(&dyp), x.addr(&s.a1), x.addr(&s.xp));
        let (da1a, dxpa) = (x.addr_mut(&mut da1), x.addr_mut(&mut dxp));
        let (g1wa, g2wa) = (x.addr_mut(&mut g1w), x.addr_mut(&mut g2w));
        let (w1, w2) = (x.addr(&self.fc1_w), x.addr(&self.fc2_w));
        let h = &self.sub.widths;
        // da1_e = (dyp_e W2_e) * [a1_e > 0]: W2_e [d, h_e] stored [K, N] with ld h_max.
        let fc2_dgrad: Vec<_> =
            (0..n).map(|e| GemmGroupParams { aux: a1a, ..group(dypa, d, at::<T>(w2, e * dm * hm), hm, da1a, hm, 0, h[e], d) }).collect();
        // dW2_e[:d, :h_e] += dyp_e^T a1_e.
        let fc2_wgrad: Vec<_> = (0..n).map(|e| group(dypa, d, a1a, hm, at::<f32>(g2wa, e * dm * hm), hm, d, h[e], 0)).collect();
        // dxp_e = da1_e W1_e: W1_e [h_e, d] stored [K, N] with ld d_max.
        let fc1_dgrad: Vec<_> = (0..n).map(|e| group(da1a, hm, at::<T>(w1, e * hm * dm), dm, dxpa, d, 0, d, h[e])).collect();
        // dW1_e[:h_e, :d] += da1_e^T xp_e.
        let fc1_wgrad: Vec<_> = (0..n).map(|e| group(da1a, hm, xpa, d, at::<f32>(g1wa, e * hm * dm), dm, h[e], d, 0)).collect();
        let widths_h = x.upload(&h.iter().map(|&v| v as i32).collect::<Vec<_>>())?;
        let widths_d = x.upload(&vec![d as i32; n])?;
        let max_h = h.iter().copied().max().unwrap_or(0);
        // SAFETY: segments lie in the R rows of dyp, a1, da1, xp, dxp; gradient buffers have the
        // parents' sizes; offsets come from the forward's dispatch.
        unsafe {
            let p = plan::<X, T>(x, GemmStage::Dgrad, &fc2_dgrad, Some(&s.offsets), r)?;
            run::<X, T>(x, &p, AUTOMOE_GEMM_RELU_MASK)?;
            let p = plan::<X, T>(x, GemmStage::Wgrad, &fc2_wgrad, Some(&s.offsets), r)?;
            run::<X, T>(x, &p, AUTOMOE_GEMM_ACCUMULATE)?;
            dbias::<X, T>(x, &dyp, d, &s.offsets, &widths_d, n, d, &mut g2b, dm)?;
            dbias::<X, T>(x, &da1, hm, &s.offsets, &widths_h, n, max_h, &mut g1b, hm)?;
            let p = plan::<X, T>(x, GemmStage::Dgrad, &fc1_dgrad, Some(&s.offsets), r)?;
            run::<X, T>(x, &p, 0)?;
            let p = plan::<X, T>(x, GemmStage::Wgrad, &fc1_wgrad, Some(&s.offsets), r)?;
            run::<X, T>(x, &p, AUTOMOE_GEMM_ACCUMULATE)?;
        }
        let mut dx = zeros::<X, T>(x, t * d)?;
        let pb = PermuteBwdParams {
            dxp: x.addr(&dxp),
            pos: x.addr(&s.pos),
            dx: x.addr_mut(&mut dx),
            tokens: t as i32,
            k: k as i32,
            d: d as i32,
            reserved: 0,
        };
        // SAFETY: dxp [R, d], pos [T*k] < R, dx [T, d].
        unsafe { x.enqueue("permute.cu", &format!("permute_bwd_{sfx}"), warp_per_item(t), &pb)? };

        let mut grw = zeros::<X, f32>(x, self.n_max * dm)?;
        let mut grb = zeros::<X, f32>(x, self.n_max)?;
        if n > 1 {
            let mut dlogits = zeros::<X, T>(x, t * n)?;
            let gb = TopkGatingBwdParams {
                probs: x.addr(&s.probs),
                topk_idx: x.addr(&s.idx),
                topk_w: x.addr(&s.w),
                dw: x.addr(&dw),
                dlogits: x.addr_mut(&mut dlogits),
                tokens: t as i32,
                experts: n as i32,
                k: k as i32,
                renorm: self.renorm as i32,
            };
            // SAFETY: probs and dlogits [T, n], idx, w and dw [T, k].
            unsafe { x.enqueue("gating.cu", &gating_kernel::<T>("bwd", n), gating_geometry(t, n), &gb)? };
            let dl = x.addr(&dlogits);
            // dWr[:n, :d] += dlogits^T x; dx += dlogits Wr[:n, :d].
            let wg = [group(dl, n, x.addr(&s.x), d, x.addr_mut(&mut grw), dm, n, d, t)];
            let dg = [group(dl, n, x.addr(&self.router_w), dm, x.addr_mut(&mut dx), d, t, d, n)];
            let whole = x.upload(&[0i32, t as i32])?;
            let wn = x.upload(&[n as i32])?;
            // SAFETY: dlogits [T, n], x and dx [T, d], Wr and its gradient [n_max, d_max].
            unsafe {
                let p = plan::<X, T>(x, GemmStage::Wgrad, &wg, None, t)?;
                run::<X, T>(x, &p, AUTOMOE_GEMM_ACCUMULATE)?;
                let p = plan::<X, T>(x, GemmStage::Dgrad, &dg, None, t)?;
                run::<X, T>(x, &p, AUTOMOE_GEMM_ACCUMULATE)?;
                dbias::<X, T>(x, &dlogits, n, &whole, &wn, 1, n, &mut grb, n)?;
            }
        }
        let split = |v: Vec<f32>, each: usize| -> Vec<Vec<f32>> { v.chunks(each).map(<[f32]>::to_vec).collect() };
        Ok(ExecMoeGrads {
            dx: x.download(&dx)?.iter().map(|v| v.to_f32()).collect(),
            router_w: x.download(&grw)?,
            router_b: x.download(&grb)?,
            fc1_w: split(x.download(&g1w)?, hm * dm),
            fc1_b: split(x.download(&g1b)?, hm),
            fc2_w: split(x.download(&g2w)?, dm * hm),
            fc2_b: split(x.download(&g2b)?, dm),
        })
    }
}
