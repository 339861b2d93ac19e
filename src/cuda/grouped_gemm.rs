//! Host side of the grouped variable-width GEMMs (cuda/grouped_gemm.cu), written once over [`Exec`]
//! so the emulator and a device launch identically.
//!
//! Two levels:
//! * [`plan`] / [`run`] / [`dbias`] work on device buffers: the problem list is built on the device
//!   from the permutation's offsets (no host round trip), which is what the MoE layer
//!   ([`super::moe_layer`]) chains.
//! * [`grouped_gemm`] takes host slices, validates every group against the buffers (errors, never
//!   panics) and writes only the groups' blocks of the output: what the tests use.

use super::abi::*;
use super::moe_exec::{Elem, Exec};
use super::moe_ops::{check_len, Geometry, KernelFloat};
use crate::{Error, Result};

/// Which product a launch computes (cuda/abi.h has the operand storage of each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmStage {
    /// `C[M, N] = A[M, K] B[N, K]^T` (+ bias, ReLU): `y = x W^T + b`.
    Fwd,
    /// `C[M, N] = A[M, K] B[K, N]` (ReLU mask): `dx = dy W`.
    Dgrad,
    /// `C[M, N] += A[K, M]^T B[K, N]`, f32 output: `dW = dy^T x`, K = tokens.
    Wgrad,
}

impl GemmStage {
    pub fn name(self) -> &'static str {
        match self {
            GemmStage::Fwd => "fwd",
            GemmStage::Dgrad => "dgrad",
            GemmStage::Wgrad => "wgrad",
        }
    }
    /// A stored `[K, M]` (else `[M, K]`).
    pub fn a_km(self) -> bool {
        self == GemmStage::Wgrad
    }
    /// B stored `[N, K]` (else `[K, N]`).
    pub fn b_nk(self) -> bool {
        self == GemmStage::Fwd
    }
    /// Operands indexed by token rows, advanced to each group's segment by the plan, and the
    /// dimension that is the segment's row count (`false`: M, `true`: K).
    pub fn token_operands(self) -> (u32, bool) {
        match self {
            GemmStage::Fwd => (AUTOMOE_GEMM_SHIFT_A | AUTOMOE_GEMM_SHIFT_C, false),
            GemmStage::Dgrad => (AUTOMOE_GEMM_SHIFT_A | AUTOMOE_GEMM_SHIFT_C | AUTOMOE_GEMM_SHIFT_AUX, false),
            GemmStage::Wgrad => (AUTOMOE_GEMM_SHIFT_A | AUTOMOE_GEMM_SHIFT_B, true),
        }
    }
    /// Entry point for element type `T`.
    pub fn kernel<T: KernelFloat>(self) -> String {
        format!("grouped_gemm_{}_{}", self.name(), T::SUFFIX)
    }
}

/// Block tile `(M, N)` of the kernels for element type `T` (f32: CUDA cores; bf16: tensor cores in
/// the configuration `bf16`).
pub fn tile_for<T: KernelFloat>(bf16: &Bf16Kernel) -> (usize, usize) {
    if T::SUFFIX == "bf16" {
        (bf16.tile_m as usize, AUTOMOE_GEMM_BF16_TILE_N as usize)
    } else {
        (AUTOMOE_GEMM_F32_TILE_M as usize, AUTOMOE_GEMM_F32_TILE_N as usize)
    }
}

/// A compiled configuration of the bf16 tensor-core kernels (cuda/grouped_gemm.cuh), all 128 columns
/// wide. The `mma.sync` ones (any sm_80+ device) have 128x128 block tiles of 32-deep k-tiles and
/// differ in warps per block and in the depth of the cp.async pipeline; the `wgmma` ones (sm_90a
/// only) have 64-deep k-tiles and one warpgroup per 128 rows of the block tile (128 or 256).
/// [`BF16_DEFAULT`] runs everywhere; the others exist so the benchmark can compare configurations
/// on a device in one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bf16Kernel {
    /// Appended to the entry points' names (`grouped_gemm_fwd_bf16{suffix}`).
    pub suffix: &'static str,
    pub warps_m: u32,
    pub warps_n: u32,
    /// Shared-memory stages: `stages - 1` k-tiles are loading while one is multiplied.
    pub stages: u32,
    /// Hopper warpgroup MMA (needs an sm_90a device; see [`Exec::has_wgmma`]).
    pub wgmma: bool,
    /// Rows of the block tile (the plan tiles each group's M by it).
    pub tile_m: u32,
}

impl Bf16Kernel {
    /// The kernel file holding this configuration's entry points.
    pub fn file(&self) -> &'static str {
        if self.suffix.is_empty() {
            FILE
        } else {
            VARIANTS_FILE
        }
    }
    pub fn threads(&self) -> u32 {
        32 * self.warps_m * self.warps_n
    }
    /// Dynamic shared memory of one block.
    pub fn smem_bytes(&self) -> u32 {
        if self.wgmma {
            // A stage is an A tile of tile_m rows and a B tile of 128, each 64 deep in bf16.
            self.stages * (self.tile_m + AUTOMOE_GEMM_BF16_TILE_N) * AUTOMOE_GEMM_WGMMA_TILE_K * 2
        } else {
            self.stages * AUTOMOE_GEMM_BF16_STAGE_BYTES
        }
    }
    /// Blocks resident per multiprocessor on sm_80 and sm_90 (228 KiB of shared memory, 64 K
    /// registers): two for every configuration up to 256 threads of <= 128 registers or 128
    /// threads of <= 255 (docs/BENCHMARKS.md, ptxas) with at most 112 KiB of shared memory, one above.
    pub fn blocks_per_sm(&self) -> u32 {
        if self.smem_bytes() > 112 * 1024 {
            1
        } else {
            2
        }
    }
    /// `mma.sync, 4 warps of 64x64, 4 stages of k32`, for tables.
    pub fn describe(&self) -> String {
        if self.wgmma {
            let wgs = self.threads() / 128;
            let s = if wgs == 1 { "" } else { "s" };
            return format!("wgmma m64n128k16, {wgs} warpgroup{s} on {}x128, {} stages of k64", self.tile_m, self.stages);
        }
        let (wm, wn) = (AUTOMOE_GEMM_BF16_TILE_M / self.warps_m, AUTOMOE_GEMM_BF16_TILE_N / self.warps_n);
        format!("mma.sync, {} warps of {wm}x{wn}, {} stages of k32", self.warps_m * self.warps_n, self.stages)
    }
    /// Whether `x` can run it.
    pub fn runs_on<X: Exec>(&self, x: &X) -> bool {
        !self.wgmma || x.has_wgmma()
    }
}

/// The configuration every caller gets: 4 warps of 64x64, 4 stages (abi.h).
pub const BF16_DEFAULT: Bf16Kernel = Bf16Kernel {
    suffix: "",
    warps_m: AUTOMOE_GEMM_BF16_WARPS_M,
    warps_n: AUTOMOE_GEMM_BF16_WARPS_N,
    stages: AUTOMOE_GEMM_BF16_STAGES,
    wgmma: false,
    tile_m: AUTOMOE_GEMM_BF16_TILE_M,
};

/// The Hopper configuration: one warpgroup on `wgmma`, 3 stages of 64-deep k-tiles (abi.h).
pub const BF16_SM90: Bf16Kernel =
    Bf16Kernel { suffix: "_sm90", warps_m: 4, warps_n: 1, stages: AUTOMOE_GEMM_WGMMA_STAGES, wgmma: true, tile_m: 128 };

/// Two warpgroups on `wgmma` sharing the B tile of a 256x128 block tile, 4 stages (192 KiB).
pub const BF16_SM90X2: Bf16Kernel = Bf16Kernel { suffix: "_sm90x2", warps_m: 8, warps_n: 1, stages: 4, wgmma: true, tile_m: 256 };

/// Every compiled bf16 configuration, the default first: 8 warps of 64x32 with 4 stages, and with 2
/// (the first tensor-core kernel, the baseline the others are measured against), and the Hopper ones.
pub const BF16_KERNELS: [Bf16Kernel; 5] = [
    BF16_DEFAULT,
    Bf16Kernel { suffix: "_w8s4", warps_m: 2, warps_n: 4, stages: 4, wgmma: false, tile_m: 128 },
    Bf16Kernel { suffix: "_w8s2", warps_m: 2, warps_n: 4, stages: 2, wgmma: false, tile_m: 128 },
    BF16_SM90,
    BF16_SM90X2,
];

/// Environment variable that picks the bf16 configuration of every plan ([`GroupedPlan::new`]) by
/// its suffix without the underscore (`w8s4`, `w8s2`, `sm90`, `sm90x2`; empty or `default`: [`BF16_DEFAULT`]),
/// so a whole MoE layer or training run can be checked or timed on another configuration.
pub const BF16_KERNEL_ENV: &str = "AUTOMOE_GEMM_BF16";

/// The configuration [`BF16_KERNEL_ENV`] names ([`BF16_DEFAULT`] when it is unset).
pub fn bf16_kernel_from_env() -> Result<Bf16Kernel> {
    match std::env::var(BF16_KERNEL_ENV) {
        Ok(name) => bf16_kernel_named(&name),
        Err(_) => Ok(BF16_DEFAULT),
    }
}

/// The configuration with entry-point suffix `_name` (`""` or `"default"`: [`BF16_DEFAULT`]); an
/// unknown name is an error listing the known ones.
pub fn bf16_kernel_named(name: &str) -> Result<Bf16Kernel> {
    let name = name.trim();
    if name.is_empty() || name == "default" {
        return Ok(BF16_DEFAULT);
    }
    let short = |k: &Bf16Kernel| k.suffix.strip_prefix('_').unwrap_or(k.suffix).to_string();
    BF16_KERNELS.iter().copied().find(|k| !k.suffix.is_empty() && short(k) == name).ok_or_else(|| {
        let known: Vec<String> = BF16_KERNELS.iter().filter(|k| !k.suffix.is_empty()).map(short).collect();
        let msg = format!("{BF16_KERNEL_ENV}={name:?} names no bf16 configuration (known: default, {})", known.join(", "));
        Error::invalid("grouped_gemm", msg)
    })
}

/// Largest group count (the plan's shared-memory scan).
pub const MAX_GROUPS: usize = 512;
/// The kernel file of the plan kernel, the f32 kernels, the default bf16 configuration and the
/// bias sums.
pub const FILE: &str = "grouped_gemm.cu";
/// The kernel file of the other bf16 configurations (an NVRTC program of its own, compiled only
/// when one of them runs).
pub const VARIANTS_FILE: &str = "grouped_gemm_variants.cu";

/// A problem list on the device: the uploaded template (set up once) and the list the plan kernel
/// writes from it, ready for [`run`]. Re-planning for new offsets ([`GroupedPlan::replan`]) and
/// running are kernel launches only, so they can be captured in a CUDA graph.
pub struct GroupedPlan<X: Exec> {
    templ: X::Buf<GemmGroupParams>,
    pub groups: X::Buf<GemmGroupParams>,
    pub stage: GemmStage,
    pub num_groups: usize,
    /// Host upper bound on the tiles (sets the persistent grid; the kernel reads the exact count).
    pub max_tiles: usize,
    /// The configuration [`run`] launches for bf16; fixed at creation, since its block tile is
    /// what the plan tiles the groups by.
    bf16: Bf16Kernel,
    params: GroupedGemmPlanParams,
}

fn to_i32(op: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::invalid(op, format!("{what} = {v} does not fit the kernels' 32-bit indices")))
}

impl<X: Exec> GroupedPlan<X> {
    /// Uploads `templ` for element type `T`. With `from_offsets`, [`Self::replan`] takes `[G + 1]`
    /// segment starts: each group's M (fwd, dgrad) or K (wgrad) becomes its segment's row count and
    /// its token operands ([`GemmStage::token_operands`]) are advanced to the segment; `max_rows`
    /// bounds every segment (it sizes the grid only). Without, the template's M and K are used.
    /// bf16 plans run the configuration [`BF16_KERNEL_ENV`] names ([`BF16_DEFAULT`] when unset).
    pub fn new<T: KernelFloat>(x: &X, stage: GemmStage, templ: &[GemmGroupParams], from_offsets: bool, max_rows: usize) -> Result<Self> {
        Self::new_with::<T>(x, stage, templ, from_offsets, max_rows, bf16_kernel_from_env()?)
    }

    /// [`Self::new`] for the bf16 configuration `bf16` (ignored for f32).
    pub fn new_with<T: KernelFloat>(
        x: &X,
        stage: GemmStage,
        templ: &[GemmGroupParams],
        from_offsets: bool,
        max_rows: usize,
        bf16: Bf16Kernel,
    ) -> Result<Self> {
        const OP: &str = "grouped_gemm plan";
        let g = templ.len();
        if g == 0 || g > MAX_GROUPS {
            return Err(Error::invalid(OP, format!("{g} groups, expected 1..={MAX_GROUPS}")));
        }
        let (tm, tn) = tile_for::<T>(&bf16);
        let (shift, count_k) = stage.token_operands();
        let max_tiles = templ
            .iter()
            .map(|q| {
                let m = if from_offsets && !count_k { max_rows } else { q.m.max(0) as usize };
                m.div_ceil(tm) * (q.n.max(0) as usize).div_ceil(tn)
            })
            .sum();
        let params = GroupedGemmPlanParams {
            num_groups: g as i32,
            count_dim: count_k as i32,
            shift_mask: shift as i32,
            elem_bytes: std::mem::size_of::<T>() as i32,
            tile_m: tm as i32,
            tile_n: tn as i32,
            accumulate: (stage == GemmStage::Wgrad) as i32,
            ..Default::default()
        };
        Ok(GroupedPlan { templ: x.upload(templ)?, groups: x.upload(templ)?, stage, num_groups: g, max_tiles, bf16, params })
    }

    /// The bf16 configuration [`run`] launches.
    pub fn bf16(&self) -> Bf16Kernel {
        self.bf16
    }

    /// Geometry and parameters of the plan launch (the benchmark times exactly this).
    pub fn replan_args(&mut self, x: &X, offsets: Option<&X::Buf<i32>>) -> (Geometry, GroupedGemmPlanParams) {
        let p = GroupedGemmPlanParams {
            templ: x.addr(&self.templ),
            offsets: offsets.map_or(0, |o| x.addr(o)),
            groups: x.addr_mut(&mut self.groups),
            ..self.params
        };
        (Geometry { grid: 1, block: AUTOMOE_GEMM_THREADS, smem_bytes: 0 }, p)
    }

    /// Queues `grouped_gemm_plan_i32`, rewriting the problem list for `offsets`.
    ///
    /// # Safety
    /// Every address in the template must be a live buffer of `x`, large enough for every group's
    /// extents once advanced by any segment `offsets` holds; `offsets` must hold `G + 1`
    /// non-decreasing rows (each segment at most `max_rows`).
    pub unsafe fn replan(&mut self, x: &X, offsets: Option<&X::Buf<i32>>) -> Result<()> {
        let (g, p) = self.replan_args(x, offsets);
        // SAFETY: templ and groups hold G entries; offsets (if any) G + 1, per this function's contract.
        unsafe { x.enqueue(FILE, "grouped_gemm_plan_i32", g, &p) }
    }
}

/// [`GroupedPlan::new`] followed by [`GroupedPlan::replan`]: set up and plan in one call.
///
/// # Safety
/// As for [`GroupedPlan::replan`].
pub unsafe fn plan<X: Exec, T: KernelFloat>(
    x: &X,
    stage: GemmStage,
    templ: &[GemmGroupParams],
    offsets: Option<&X::Buf<i32>>,
    max_rows: usize,
) -> Result<GroupedPlan<X>> {
    // SAFETY: forwarded from this function's contract.
    unsafe { plan_with::<X, T>(x, stage, templ, offsets, max_rows, bf16_kernel_from_env()?) }
}

/// [`plan`] for the bf16 configuration `bf16` (ignored for f32).
///
/// # Safety
/// As for [`GroupedPlan::replan`].
pub unsafe fn plan_with<X: Exec, T: KernelFloat>(
    x: &X,
    stage: GemmStage,
    templ: &[GemmGroupParams],
    offsets: Option<&X::Buf<i32>>,
    max_rows: usize,
    bf16: Bf16Kernel,
) -> Result<GroupedPlan<X>> {
    let mut p = GroupedPlan::new_with::<T>(x, stage, templ, offsets.is_some(), max_rows, bf16)?;
    // SAFETY: forwarded from this function's contract.
    unsafe { p.replan(x, offsets)? };
    Ok(p)
}

/// One launch of a grouped GEMM kernel.
pub struct GemmLaunch {
    /// Kernel file and entry point.
    pub file: &'static str,
    pub name: String,
    pub geometry: Geometry,
    pub params: GroupedGemmParams,
}

/// The launch [`run`] makes (the benchmark times exactly this launch).
pub fn run_args<X: Exec, T: KernelFloat>(x: &X, plan: &GroupedPlan<X>, flags: u32) -> GemmLaunch {
    let grid = |per_sm: u32| plan.max_tiles.min(x.persistent_blocks(per_sm) as usize).max(1) as u32;
    let p = GroupedGemmParams { groups: x.addr(&plan.groups), num_groups: plan.num_groups as i32, flags: flags as i32 };
    if T::SUFFIX == "bf16" {
        let k = plan.bf16;
        let geometry = Geometry { grid: grid(k.blocks_per_sm()), block: k.threads(), smem_bytes: k.smem_bytes() };
        GemmLaunch { file: k.file(), name: format!("{}{}", plan.stage.kernel::<T>(), k.suffix), geometry, params: p }
    } else {
        // The f32 kernel: 256 threads, static shared memory only; two fit per SM.
        let geometry = Geometry { grid: grid(2), block: AUTOMOE_GEMM_THREADS, smem_bytes: 0 };
        GemmLaunch { file: FILE, name: plan.stage.kernel::<T>(), geometry, params: p }
    }
}

/// Runs the grouped GEMM of `plan` with `flags` (`AUTOMOE_GEMM_*`) on persistent blocks.
///
/// # Safety
/// The plan's addresses must still be live and sized as [`plan`] required.
pub unsafe fn run<X: Exec, T: KernelFloat>(x: &X, plan: &GroupedPlan<X>, flags: u32) -> Result<()> {
    if plan.max_tiles == 0 {
        return Ok(());
    }
    if T::SUFFIX == "bf16" && !plan.bf16.runs_on(x) {
        let k = plan.bf16;
        let msg = format!("the bf16 configuration {} ({}) needs an sm_90a device, not {}", k.suffix, k.describe(), x.backend_name());
        return Err(Error::invalid("grouped_gemm", msg));
    }
    let l = run_args::<X, T>(x, plan, flags);
    // SAFETY: forwarded from this function's contract.
    unsafe { x.enqueue(l.file, &l.name, l.geometry, &l.params) }
}

/// `out[g, :widths[g]] += column sums of rows offsets[g]..offsets[g+1]` of `src: [R, ld]`.
///
/// # Safety
/// `offsets` holds `G + 1` non-decreasing rows within `src`, `widths` `G` values `<= ld` and
/// `<= out_stride`, each `<= max_width`, and `out` holds `G * out_stride` f32.
#[allow(clippy::too_many_arguments)]
pub unsafe fn dbias<X: Exec, T: KernelFloat>(
    x: &X,
    src: &X::Buf<T>,
    ld: usize,
    offsets: &X::Buf<i32>,
    widths: &X::Buf<i32>,
    num_groups: usize,
    max_width: usize,
    out: &mut X::Buf<f32>,
    out_stride: usize,
) -> Result<()> {
    const OP: &str = "grouped_gemm_dbias";
    if num_groups == 0 || max_width == 0 {
        return Ok(());
    }
    let p = GroupedColSumParams {
        x: x.addr(src),
        offsets: x.addr(offsets),
        widths: x.addr(widths),
        out: x.addr_mut(out),
        num_groups: to_i32(OP, "groups", num_groups)?,
        ld: to_i32(OP, "ld", ld)?,
        out_stride: to_i32(OP, "out_stride", out_stride)?,
        max_width: to_i32(OP, "max_width", max_width)?,
    };
    let grid = u32::try_from(num_groups * max_width.div_ceil(32)).map_err(|_| Error::invalid(OP, "grid too large"))?;
    // SAFETY: forwarded from this function's contract.
    unsafe {
        x.enqueue(FILE, &format!("grouped_gemm_dbias_{}", T::SUFFIX), Geometry { grid, block: AUTOMOE_GEMM_THREADS, smem_bytes: 0 }, &p)
    }
}

// ---- Host-slice API ------------------------------------------------------------------------------

/// One problem of [`grouped_gemm`], offsets in elements of the host buffers. With segment
/// `offsets`, `m` (fwd, dgrad) or `k` (wgrad) is replaced by the segment's rows and the token
/// operands' offsets are relative to the segment's first row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostGroup {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a_off: usize,
    pub lda: usize,
    pub b_off: usize,
    pub ldb: usize,
    pub c_off: usize,
    pub ldc: usize,
    /// Offset of this group's `[N]` bias in the bias buffer.
    pub bias_off: Option<usize>,
}

/// The operands of one [`grouped_gemm`] call.
pub struct HostGemm<'a, T> {
    pub stage: GemmStage,
    pub a: &'a [T],
    pub b: &'a [T],
    /// f32 biases (fwd).
    pub bias: Option<&'a [f32]>,
    /// `aux` for `AUTOMOE_GEMM_RELU_MASK`, laid out like C.
    pub aux: Option<&'a [T]>,
    pub flags: u32,
}

/// A `rows x cols` block at `off` with leading dimension `ld` must fit `len` elements.
#[allow(clippy::too_many_arguments)]
fn check_extent(op: &'static str, what: &str, g: usize, off: usize, rows: usize, cols: usize, ld: usize, len: usize) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    if cols > ld {
        return Err(Error::invalid(op, format!("group {g}: {what} has {cols} columns but leading dimension {ld}")));
    }
    let end = (rows - 1).checked_mul(ld).and_then(|v| v.checked_add(off)).and_then(|v| v.checked_add(cols));
    match end {
        Some(e) if e <= len => Ok(()),
        _ => Err(Error::invalid(op, format!("group {g}: {what} ({rows} x {cols} at {off}, ld {ld}) exceeds its {len} elements"))),
    }
}

/// Validates `offsets` as `G + 1` non-decreasing segment starts.
pub fn check_offsets(op: &'static str, offsets: &[i32], groups: usize) -> Result<()> {
    check_len(op, "offsets", offsets.len(), groups + 1)?;
    if offsets[0] < 0 || offsets.windows(2).any(|w| w[0] > w[1]) {
        return Err(Error::invalid(op, format!("offsets {offsets:?} are not non-decreasing from >= 0")));
    }
    Ok(())
}

/// The groups as the device plan will see them: segment rows applied, token operands advanced.
fn effective(stage: GemmStage, groups: &[HostGroup], offsets: Option<&[i32]>) -> Vec<HostGroup> {
    let (shift, count_k) = stage.token_operands();
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let mut q = *g;
            if let Some(o) = offsets {
                let (r0, rows) = (o[i] as usize, (o[i + 1] - o[i]) as usize);
                if count_k {
                    q.k = rows;
                } else {
                    q.m = rows;
                }
                // Saturating: an absurd offset must fail the extent checks, not overflow.
                if shift & AUTOMOE_GEMM_SHIFT_A != 0 {
                    q.a_off = q.a_off.saturating_add(r0.saturating_mul(q.lda));
                }
                if shift & AUTOMOE_GEMM_SHIFT_B != 0 {
                    q.b_off = q.b_off.saturating_add(r0.saturating_mul(q.ldb));
                }
                if shift & AUTOMOE_GEMM_SHIFT_C != 0 {
                    q.c_off = q.c_off.saturating_add(r0.saturating_mul(q.ldc));
                }
            }
            q
        })
        .collect()
}

/// Runs one grouped GEMM on host data: `c` is read (with `AUTOMOE_GEMM_ACCUMULATE`) and written
/// in place; elements outside every group's C block are left as they were. `C` must be `T` for
/// fwd/dgrad and f32 for wgrad.
pub fn grouped_gemm<X: Exec, T: KernelFloat, C: KernelFloat>(
    x: &X,
    op: &HostGemm<T>,
    groups: &[HostGroup],
    offsets: Option<&[i32]>,
    c: &mut [C],
) -> Result<()> {
    // The configuration every plan gets (BF16_KERNEL_ENV), not a fixed one.
    grouped_gemm_with(x, op, groups, offsets, c, bf16_kernel_from_env()?)
}

/// [`grouped_gemm`] with the bf16 configuration `bf16` (ignored for f32).
pub fn grouped_gemm_with<X: Exec, T: KernelFloat, C: KernelFloat>(
    x: &X,
    op: &HostGemm<T>,
    groups: &[HostGroup],
    offsets: Option<&[i32]>,
    c: &mut [C],
    bf16: Bf16Kernel,
) -> Result<()> {
    const OP: &str = "grouped_gemm";
    let stage = op.stage;
    let want_c = if stage == GemmStage::Wgrad { "f32" } else { T::SUFFIX };
    if C::SUFFIX != want_c {
        return Err(Error::invalid(OP, format!("{} output must be {want_c}, got {}", stage.name(), C::SUFFIX)));
    }
    if groups.is_empty() || groups.len() > MAX_GROUPS {
        return Err(Error::invalid(OP, format!("{} groups, expected 1..={MAX_GROUPS}", groups.len())));
    }
    if op.flags & !(AUTOMOE_GEMM_RELU | AUTOMOE_GEMM_ACCUMULATE | AUTOMOE_GEMM_RELU_MASK) != 0 {
        return Err(Error::invalid(OP, format!("unknown flags {:#x}", op.flags)));
    }
    if let Some(o) = offsets {
        check_offsets(OP, o, groups.len())?;
    }
    let eff = effective(stage, groups, offsets);
    for (i, q) in eff.iter().enumerate() {
        for v in [q.m, q.n, q.k, q.lda, q.ldb, q.ldc] {
            to_i32(OP, "a dimension", v)?;
        }
        let (ar, ac) = if stage.a_km() { (q.k, q.m) } else { (q.m, q.k) };
        let (br, bc) = if stage.b_nk() { (q.n, q.k) } else { (q.k, q.n) };
        check_extent(OP, "A", i, q.a_off, ar, ac, q.lda, op.a.len())?;
        check_extent(OP, "B", i, q.b_off, br, bc, q.ldb, op.b.len())?;
        check_extent(OP, "C", i, q.c_off, q.m, q.n, q.ldc, c.len())?;
        if let Some(aux) = op.aux {
            check_extent(OP, "aux", i, q.c_off, q.m, q.n, q.ldc, aux.len())?;
        }
        match (q.bias_off, op.bias) {
            (Some(off), Some(b)) if off.checked_add(q.n).is_some_and(|e| e <= b.len()) => {}
            (Some(_), _) => return Err(Error::invalid(OP, format!("group {i}: bias out of range or missing"))),
            (None, _) => {}
        }
    }
    if op.flags & AUTOMOE_GEMM_RELU_MASK != 0 && op.aux.is_none() {
        return Err(Error::invalid(OP, "AUTOMOE_GEMM_RELU_MASK needs aux"));
    }
    let max_rows = offsets.map_or(0, |o| (o[groups.len()] - o[0]) as usize);
    // Zero-length uploads still give valid (never dereferenced) addresses.
    let (ab, bb) = (x.upload(op.a)?, x.upload(op.b)?);
    let biasb = x.upload(op.bias.unwrap_or(&[]))?;
    let auxb = x.upload(op.aux.unwrap_or(&[]))?;
    let mut cb = x.upload(c)?;
    let offb = offsets.map(|o| x.upload(o)).transpose()?;
    // Wrapping: an empty group's operand offsets are unchecked, and its operands are never read.
    let addr_at = |base: automoe_dptr, off: usize, size: usize| base.wrapping_add(off.wrapping_mul(size) as automoe_dptr);
    let (ts, cs) = (std::mem::size_of::<T>(), std::mem::size_of::<C>());
    let cbase = x.addr_mut(&mut cb);
    let templ: Vec<GemmGroupParams> = groups
        .iter()
        .map(|g| GemmGroupParams {
            a: addr_at(x.addr(&ab), g.a_off, ts),
            b: addr_at(x.addr(&bb), g.b_off, ts),
            c: addr_at(cbase, g.c_off, cs),
            bias: g.bias_off.map_or(0, |o| addr_at(x.addr(&biasb), o, 4)),
            aux: if op.aux.is_some() { addr_at(x.addr(&auxb), g.c_off, ts) } else { 0 },
            m: g.m as i32,
            n: g.n as i32,
            k: g.k as i32,
            lda: g.lda as i32,
            ldb: g.ldb as i32,
            ldc: g.ldc as i32,
            tiles: 0,
            tile_start: 0,
        })
        .collect();
    // SAFETY: every group's extents, after the offsets' shifts, were checked above against the
    // buffers the addresses point into; the buffers live until the end of this function.
    unsafe {
        let plan = plan_with::<X, T>(x, stage, &templ, offb.as_ref(), max_rows, bf16)?;
        run::<X, T>(x, &plan, op.flags)?;
    }
    c.copy_from_slice(&x.download(&cb)?);
    Ok(())
}

/// Host-slice column sums: `out[g, :widths[g]] += sum of rows offsets[g]..offsets[g+1] of src`.
#[allow(clippy::too_many_arguments)]
pub fn grouped_dbias<X: Exec, T: KernelFloat + Elem>(
    x: &X,
    src: &[T],
    ld: usize,
    offsets: &[i32],
    widths: &[usize],
    out: &mut [f32],
    out_stride: usize,
) -> Result<()> {
    const OP: &str = "grouped_gemm_dbias";
    let g = widths.len();
    check_offsets(OP, offsets, g)?;
    check_len(OP, "out", out.len(), g.checked_mul(out_stride).ok_or_else(|| Error::invalid(OP, "out size overflows"))?)?;
    if widths.iter().any(|&w| w > ld || w > out_stride) {
        return Err(Error::invalid(OP, format!("widths {widths:?} exceed ld {ld} or out_stride {out_stride}")));
    }
    if (offsets[g] as usize).checked_mul(ld).is_none_or(|n| n > src.len()) {
        return Err(Error::invalid(OP, format!("{} rows of {ld} exceed src's {} elements", offsets[g], src.len())));
    }
    let w32: Vec<i32> = widths.iter().map(|&w| to_i32(OP, "width", w)).collect::<Result<_>>()?;
    let (sb, ob, wb) = (x.upload(src)?, x.upload(offsets)?, x.upload(&w32)?);
    let mut outb = x.upload(out)?;
    let max_width = widths.iter().copied().max().unwrap_or(0);
    // SAFETY: offsets, widths and out checked above against src, ld and out_stride.
    unsafe { dbias::<X, T>(x, &sb, ld, &ob, &wb, g, max_width, &mut outb, out_stride)? };
    out.copy_from_slice(&x.download(&outb)?);
    Ok(())
}

/// One problem of a grouped launch: `C [m, n] = op(A) op(B)` with `k` the inner size and the
/// operands' leading dimensions (bias, aux and the plan's fields left zero).
#[allow(clippy::too_many_arguments)]
pub(crate) fn group(
    a: automoe_dptr,
    lda: usize,
    b: automoe_dptr,
    ldb: usize,
    c: automoe_dptr,
    ldc: usize,
    m: usize,
    n: usize,
    k: usize,
) -> GemmGroupParams {
    GemmGroupParams {
        a,
        b,
        c,
        lda: lda as i32,
        ldb: ldb as i32,
        ldc: ldc as i32,
        m: m as i32,
        n: n as i32,
        k: k as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_configurations_by_name() {
        assert_eq!(bf16_kernel_named("").unwrap(), BF16_DEFAULT);
        assert_eq!(bf16_kernel_named(" default ").unwrap(), BF16_DEFAULT);
        assert_eq!(bf16_kernel_named("sm90").unwrap(), BF16_SM90);
        assert_eq!(bf16_kernel_named("w8s2").unwrap().stages, 2);
        let e = bf16_kernel_named("sm100").unwrap_err().to_string();
        assert!(e.contains("AUTOMOE_GEMM_BF16") && e.contains("w8s4") && e.contains("sm90"), "{e}");
    }
}
