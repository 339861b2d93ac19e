//! The SIMT emulator: the kernels of cuda/*.cu compiled as host C++20 by build.rs (cuda/emu/) and
//! run on CPU fibers, so kernel indexing, barriers and reductions are tested without a GPU. See
//! docs/EMULATOR.md for the CUDA subset it implements. Slow; for small shapes only.

use std::ffi::{c_char, c_int, CStr};

use super::abi::*;
use super::moe_exec::{Elem, Exec, KernelParams};
use super::moe_ops::Geometry;
use crate::{Error, Result};

/// Launch configuration, mirrored by `emu::LaunchCfg` in cuda/emu/emu.h.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchCfg {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub smem_bytes: u32,
    /// 0: fibers of a block run in thread order between barriers; otherwise the order is reshuffled
    /// (seeded) after every barrier, which varies the interleaving races depend on.
    pub seed: u32,
}

impl LaunchCfg {
    /// A 1-D launch.
    pub fn linear(grid: u32, block: u32, smem_bytes: u32) -> Self {
        LaunchCfg { grid: [grid, 1, 1], block: [block, 1, 1], smem_bytes, seed: 0 }
    }
}

impl From<Geometry> for LaunchCfg {
    fn from(g: Geometry) -> Self {
        LaunchCfg::linear(g.grid, g.block, g.smem_bytes)
    }
}

type Launcher<P> = unsafe extern "C" fn(*const LaunchCfg, *const P) -> c_int;

/// One emulated kernel: its CUDA name and the C launcher build.rs compiled for it.
#[derive(Clone, Copy)]
pub struct Kernel<P> {
    pub name: &'static str,
    launcher: Launcher<P>,
}

/// Shared-memory bank accounting of one launch, mirrored by `emu::SmemStats` in cuda/emu/emu.h
/// (docs/EMULATOR.md, "Bank conflicts"). A phase is the 8 lanes of a warp instruction that one
/// shared-memory wavefront serves when their 16-byte accesses hit distinct bank quads; a phase
/// whose lanes touch different 16-byte slots of one quad takes one wavefront per such slot. So
/// `wavefronts == phases` means conflict-free, and `wavefronts / phases` is the mean slowdown.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmemStats {
    /// `cp.async` 16-byte writes into dynamic shared memory.
    pub cp_async_phases: u64,
    pub cp_async_wavefronts: u64,
    /// `ldmatrix` 16-byte row reads from dynamic shared memory (one phase per 8x8 matrix).
    pub ldmatrix_phases: u64,
    pub ldmatrix_wavefronts: u64,
    /// Such accesses outside dynamic shared memory (static `__shared__`), not accounted.
    pub untracked: u64,
}

extern "C" {
    fn emu_last_error() -> *const c_char;
    fn emu_last_smem_stats(out: *mut SmemStats);
}

/// The bank accounting of the last emulated launch on this OS thread (launches are synchronous, so
/// this is the caller's last launch; zeros before the first).
pub fn last_launch_smem_stats() -> SmemStats {
    let mut s = SmemStats::default();
    // SAFETY: writes one #[repr(C)] struct of the mirrored layout through a valid pointer.
    unsafe { emu_last_smem_stats(&mut s) };
    s
}

macro_rules! emu_kernels {
    ($($konst:ident = $sym:ident($name:literal, $params:ty);)*) => {
        extern "C" {
            $(fn $sym(cfg: *const LaunchCfg, p: *const $params) -> c_int;)*
        }
        $(
            #[doc = concat!("`", stringify!($sym), "` (cuda/emu/kernels.def).")]
            pub const $konst: Kernel<$params> =
                Kernel { name: $name, launcher: $sym };
        )*
    };
}

// Must list the same kernels as cuda/emu/kernels.def (a missing one fails to link).
emu_kernels! {
    TOPK_GATING_FWD_F32 = emu_launch_topk_gating_fwd_f32("topk_gating_fwd_f32", TopkGatingFwdParams);
    TOPK_GATING_FWD_BF16 = emu_launch_topk_gating_fwd_bf16("topk_gating_fwd_bf16", TopkGatingFwdParams);
    TOPK_GATING_BWD_F32 = emu_launch_topk_gating_bwd_f32("topk_gating_bwd_f32", TopkGatingBwdParams);
    TOPK_GATING_BWD_BF16 = emu_launch_topk_gating_bwd_bf16("topk_gating_bwd_bf16", TopkGatingBwdParams);
    TOPK_GATING_FWD_WIDE_F32 = emu_launch_topk_gating_fwd_wide_f32("topk_gating_fwd_wide_f32", TopkGatingFwdParams);
    TOPK_GATING_FWD_WIDE_BF16 = emu_launch_topk_gating_fwd_wide_bf16("topk_gating_fwd_wide_bf16", TopkGatingFwdParams);
    TOPK_GATING_BWD_WIDE_F32 = emu_launch_topk_gating_bwd_wide_f32("topk_gating_bwd_wide_f32", TopkGatingBwdParams);
    TOPK_GATING_BWD_WIDE_BF16 = emu_launch_topk_gating_bwd_wide_bf16("topk_gating_bwd_wide_bf16", TopkGatingBwdParams);
    TOPK_SELECT_FWD_F32 = emu_launch_topk_select_fwd_f32("topk_select_fwd_f32", TopkSelectParams);
    TOPK_SELECT_FWD_BF16 = emu_launch_topk_select_fwd_bf16("topk_select_fwd_bf16", TopkSelectParams);
    TOPK_SELECT_BWD_F32 = emu_launch_topk_select_bwd_f32("topk_select_bwd_f32", TopkSelectParams);
    TOPK_SELECT_BWD_BF16 = emu_launch_topk_select_bwd_bf16("topk_select_bwd_bf16", TopkSelectParams);
    PERMUTE_DISPATCH_COUNT_I32 = emu_launch_permute_dispatch_count_i32("permute_dispatch_count_i32", DispatchParams);
    PERMUTE_DISPATCH_SCAN_I32 = emu_launch_permute_dispatch_scan_i32("permute_dispatch_scan_i32", DispatchParams);
    PERMUTE_DISPATCH_ASSIGN_I32 = emu_launch_permute_dispatch_assign_i32("permute_dispatch_assign_i32", DispatchParams);
    DISPATCH_FRACTIONS_F32 = emu_launch_dispatch_fractions_f32("dispatch_fractions_f32", DispatchFractionsParams);
    PERMUTE_FWD_F32 = emu_launch_permute_fwd_f32("permute_fwd_f32", PermuteFwdParams);
    PERMUTE_FWD_BF16 = emu_launch_permute_fwd_bf16("permute_fwd_bf16", PermuteFwdParams);
    PERMUTE_BWD_F32 = emu_launch_permute_bwd_f32("permute_bwd_f32", PermuteBwdParams);
    PERMUTE_BWD_BF16 = emu_launch_permute_bwd_bf16("permute_bwd_bf16", PermuteBwdParams);
    COMBINE_FWD_F32 = emu_launch_combine_fwd_f32("combine_fwd_f32", CombineFwdParams);
    COMBINE_FWD_BF16 = emu_launch_combine_fwd_bf16("combine_fwd_bf16", CombineFwdParams);
    COMBINE_BWD_F32 = emu_launch_combine_bwd_f32("combine_bwd_f32", CombineBwdParams);
    COMBINE_BWD_BF16 = emu_launch_combine_bwd_bf16("combine_bwd_bf16", CombineBwdParams);
    GROUPED_GEMM_PLAN_I32 = emu_launch_grouped_gemm_plan_i32("grouped_gemm_plan_i32", GroupedGemmPlanParams);
    GROUPED_GEMM_FWD_F32 = emu_launch_grouped_gemm_fwd_f32("grouped_gemm_fwd_f32", GroupedGemmParams);
    GROUPED_GEMM_DGRAD_F32 = emu_launch_grouped_gemm_dgrad_f32("grouped_gemm_dgrad_f32", GroupedGemmParams);
    GROUPED_GEMM_WGRAD_F32 = emu_launch_grouped_gemm_wgrad_f32("grouped_gemm_wgrad_f32", GroupedGemmParams);
    GROUPED_GEMM_FWD_BF16 = emu_launch_grouped_gemm_fwd_bf16("grouped_gemm_fwd_bf16", GroupedGemmParams);
    GROUPED_GEMM_DGRAD_BF16 = emu_launch_grouped_gemm_dgrad_bf16("grouped_gemm_dgrad_bf16", GroupedGemmParams);
    GROUPED_GEMM_WGRAD_BF16 = emu_launch_grouped_gemm_wgrad_bf16("grouped_gemm_wgrad_bf16", GroupedGemmParams);
    GROUPED_GEMM_FWD_BF16_W8S4 = emu_launch_grouped_gemm_fwd_bf16_w8s4("grouped_gemm_fwd_bf16_w8s4", GroupedGemmParams);
    GROUPED_GEMM_DGRAD_BF16_W8S4 = emu_launch_grouped_gemm_dgrad_bf16_w8s4("grouped_gemm_dgrad_bf16_w8s4", GroupedGemmParams);
    GROUPED_GEMM_WGRAD_BF16_W8S4 = emu_launch_grouped_gemm_wgrad_bf16_w8s4("grouped_gemm_wgrad_bf16_w8s4", GroupedGemmParams);
    GROUPED_GEMM_FWD_BF16_W8S2 = emu_launch_grouped_gemm_fwd_bf16_w8s2("grouped_gemm_fwd_bf16_w8s2", GroupedGemmParams);
    GROUPED_GEMM_DGRAD_BF16_W8S2 = emu_launch_grouped_gemm_dgrad_bf16_w8s2("grouped_gemm_dgrad_bf16_w8s2", GroupedGemmParams);
    GROUPED_GEMM_WGRAD_BF16_W8S2 = emu_launch_grouped_gemm_wgrad_bf16_w8s2("grouped_gemm_wgrad_bf16_w8s2", GroupedGemmParams);
    GROUPED_GEMM_FWD_BF16_SM90 = emu_launch_grouped_gemm_fwd_bf16_sm90("grouped_gemm_fwd_bf16_sm90", GroupedGemmParams);
    GROUPED_GEMM_DGRAD_BF16_SM90 = emu_launch_grouped_gemm_dgrad_bf16_sm90("grouped_gemm_dgrad_bf16_sm90", GroupedGemmParams);
    GROUPED_GEMM_WGRAD_BF16_SM90 = emu_launch_grouped_gemm_wgrad_bf16_sm90("grouped_gemm_wgrad_bf16_sm90", GroupedGemmParams);
    GROUPED_GEMM_FWD_BF16_SM90X2 = emu_launch_grouped_gemm_fwd_bf16_sm90x2("grouped_gemm_fwd_bf16_sm90x2", GroupedGemmParams);
    GROUPED_GEMM_DGRAD_BF16_SM90X2 = emu_launch_grouped_gemm_dgrad_bf16_sm90x2("grouped_gemm_dgrad_bf16_sm90x2", GroupedGemmParams);
    GROUPED_GEMM_WGRAD_BF16_SM90X2 = emu_launch_grouped_gemm_wgrad_bf16_sm90x2("grouped_gemm_wgrad_bf16_sm90x2", GroupedGemmParams);
    GROUPED_GEMM_DBIAS_F32 = emu_launch_grouped_gemm_dbias_f32("grouped_gemm_dbias_f32", GroupedColSumParams);
    GROUPED_GEMM_DBIAS_BF16 = emu_launch_grouped_gemm_dbias_bf16("grouped_gemm_dbias_bf16", GroupedColSumParams);
    COPY_F32_F32 = emu_launch_copy_f32_f32("copy_f32_f32", CopyParams);
    COPY_BF16_BF16 = emu_launch_copy_bf16_bf16("copy_bf16_bf16", CopyParams);
    COPY_F32_BF16 = emu_launch_copy_f32_bf16("copy_f32_bf16", CopyParams);
    COPY_BF16_F32 = emu_launch_copy_bf16_f32("copy_bf16_f32", CopyParams);
    BINARY_F32 = emu_launch_binary_f32("binary_f32", BinaryParams);
    BINARY_BF16 = emu_launch_binary_bf16("binary_bf16", BinaryParams);
    UNARY_F32 = emu_launch_unary_f32("unary_f32", UnaryParams);
    UNARY_BF16 = emu_launch_unary_bf16("unary_bf16", UnaryParams);
    DROPOUT_MASK_F32 = emu_launch_dropout_mask_f32("dropout_mask_f32", DropoutParams);
    DROPOUT_MASK_BF16 = emu_launch_dropout_mask_bf16("dropout_mask_bf16", DropoutParams);
    SUM_TO_F32 = emu_launch_sum_to_f32("sum_to_f32", SumToParams);
    SUM_TO_BF16 = emu_launch_sum_to_bf16("sum_to_bf16", SumToParams);
    SUMSQ_PARTIAL_F32 = emu_launch_sumsq_partial_f32("sumsq_partial_f32", SumSquaresParams);
    SUMSQ_PARTIAL_BF16 = emu_launch_sumsq_partial_bf16("sumsq_partial_bf16", SumSquaresParams);
    LAYER_NORM_FWD_F32 = emu_launch_layer_norm_fwd_f32("layer_norm_fwd_f32", LayerNormParams);
    LAYER_NORM_FWD_BF16 = emu_launch_layer_norm_fwd_bf16("layer_norm_fwd_bf16", LayerNormParams);
    LAYER_NORM_BWD_F32 = emu_launch_layer_norm_bwd_f32("layer_norm_bwd_f32", LayerNormParams);
    LAYER_NORM_BWD_BF16 = emu_launch_layer_norm_bwd_bf16("layer_norm_bwd_bf16", LayerNormParams);
    LAYER_NORM_DPARAMS_F32 = emu_launch_layer_norm_dparams_f32("layer_norm_dparams_f32", LayerNormParams);
    LAYER_NORM_DPARAMS_BF16 = emu_launch_layer_norm_dparams_bf16("layer_norm_dparams_bf16", LayerNormParams);
    SOFTMAX_FWD_F32 = emu_launch_softmax_fwd_f32("softmax_fwd_f32", SoftmaxParams);
    SOFTMAX_FWD_BF16 = emu_launch_softmax_fwd_bf16("softmax_fwd_bf16", SoftmaxParams);
    SOFTMAX_BWD_F32 = emu_launch_softmax_bwd_f32("softmax_bwd_f32", SoftmaxParams);
    SOFTMAX_BWD_BF16 = emu_launch_softmax_bwd_bf16("softmax_bwd_bf16", SoftmaxParams);
    CROSS_ENTROPY_FWD_F32 = emu_launch_cross_entropy_fwd_f32("cross_entropy_fwd_f32", CrossEntropyParams);
    CROSS_ENTROPY_FWD_BF16 = emu_launch_cross_entropy_fwd_bf16("cross_entropy_fwd_bf16", CrossEntropyParams);
    CROSS_ENTROPY_BWD_F32 = emu_launch_cross_entropy_bwd_f32("cross_entropy_bwd_f32", CrossEntropyParams);
    CROSS_ENTROPY_BWD_BF16 = emu_launch_cross_entropy_bwd_bf16("cross_entropy_bwd_bf16", CrossEntropyParams);
    EMBEDDING_FWD_F32 = emu_launch_embedding_fwd_f32("embedding_fwd_f32", EmbeddingParams);
    EMBEDDING_FWD_BF16 = emu_launch_embedding_fwd_bf16("embedding_fwd_bf16", EmbeddingParams);
    EMBEDDING_BWD_F32 = emu_launch_embedding_bwd_f32("embedding_bwd_f32", EmbeddingParams);
    EMBEDDING_BWD_BF16 = emu_launch_embedding_bwd_bf16("embedding_bwd_bf16", EmbeddingParams);
    ADAM_F32 = emu_launch_adam_f32("adam_f32", AdamParams);
    ROW_TOP_F32 = emu_launch_row_top_f32("row_top_f32", RowTopParams);
    ROW_TOP_BF16 = emu_launch_row_top_bf16("row_top_bf16", RowTopParams);
    EMUTEST_BLOCK_REDUCE_F32 = emu_launch_emutest_block_reduce_f32("emutest_block_reduce_f32", EmuTestParams);
    EMUTEST_TRANSPOSE_F32 = emu_launch_emutest_transpose_f32("emutest_transpose_f32", EmuTestParams);
    EMUTEST_WARP_SCAN_I32 = emu_launch_emutest_warp_scan_i32("emutest_warp_scan_i32", EmuTestParams);
    EMUTEST_WARP_OPS_I32 = emu_launch_emutest_warp_ops_i32("emutest_warp_ops_i32", EmuTestParams);
    EMUTEST_RACE_F32 = emu_launch_emutest_race_f32("emutest_race_f32", EmuTestParams);
    EMUTEST_ATOMIC_I32 = emu_launch_emutest_atomic_i32("emutest_atomic_i32", EmuTestParams);
    EMUTEST_BF16_I32 = emu_launch_emutest_bf16_i32("emutest_bf16_i32", EmuTestParams);
    EMUTEST_DIVERGENT_SHFL_I32 = emu_launch_emutest_divergent_shfl_i32("emutest_divergent_shfl_i32", EmuTestParams);
    EMUTEST_DEADLOCK_I32 = emu_launch_emutest_deadlock_i32("emutest_deadlock_i32", EmuTestParams);
    EMUTEST_BANK_CONFLICTS_I32 = emu_launch_emutest_bank_conflicts_i32("emutest_bank_conflicts_i32", EmuTestParams);
    EMUTEST_VEC_LOAD_I32 = emu_launch_emutest_vec_load_i32("emutest_vec_load_i32", EmuTestParams);
    PTXTEST_MMA_BF16 = emu_launch_ptxtest_mma_bf16("ptxtest_mma_bf16", EmuTestParams);
    PTXTEST_LDMATRIX_B16 = emu_launch_ptxtest_ldmatrix_b16("ptxtest_ldmatrix_b16", EmuTestParams);
    PTXTEST_CPASYNC_F32 = emu_launch_ptxtest_cpasync_f32("ptxtest_cpasync_f32", EmuTestParams);
    PTXTEST_WGMMA_BF16 = emu_launch_ptxtest_wgmma_bf16("ptxtest_wgmma_bf16", EmuTestParams);
}

/// Host address of a slice as the kernels' `automoe_dptr`.
pub fn addr<T>(s: &[T]) -> automoe_dptr {
    s.as_ptr() as usize as automoe_dptr
}

/// Mutable counterpart of [`addr`].
pub fn addr_mut<T>(s: &mut [T]) -> automoe_dptr {
    s.as_mut_ptr() as usize as automoe_dptr
}

/// Runs `kernel` on the emulator, blocking until every block has finished.
///
/// # Safety
/// Every address in `params` must point to host memory valid for all the reads and writes the kernel
/// performs for the shapes in `params` and `cfg`, and nothing else may access that memory meanwhile.
pub unsafe fn launch<P>(kernel: Kernel<P>, cfg: &LaunchCfg, params: &P) -> Result<()> {
    // SAFETY: the caller guarantees the addresses in `params`; cfg and params are live references
    // for the whole call, which returns only after the launch has finished.
    let rc = unsafe { (kernel.launcher)(cfg, params) };
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: emu_last_error returns a NUL-terminated thread-local string that stays valid until the
    // next launch on this thread; we copy it out immediately.
    let msg = unsafe { CStr::from_ptr(emu_last_error()) }.to_string_lossy().into_owned();
    Err(Error::Cuda(format!("emulated {}: {msg}", kernel.name)))
}

macro_rules! kernel_params {
    ($($params:ty: [$($konst:ident),*];)*) => {$(
        // SAFETY: a #[repr(C)] POD struct mirroring cuda/abi.h, passed by value as a kernel argument.
        unsafe impl cudarc::driver::DeviceRepr for $params {}
        impl KernelParams for $params {
            fn emu_kernel(name: &str) -> Option<Kernel<Self>> {
                [$($konst),*].into_iter().find(|k| k.name == name)
            }
        }
    )*};
}

kernel_params! {
    TopkGatingFwdParams: [TOPK_GATING_FWD_F32, TOPK_GATING_FWD_BF16, TOPK_GATING_FWD_WIDE_F32, TOPK_GATING_FWD_WIDE_BF16];
    TopkGatingBwdParams: [TOPK_GATING_BWD_F32, TOPK_GATING_BWD_BF16, TOPK_GATING_BWD_WIDE_F32, TOPK_GATING_BWD_WIDE_BF16];
    TopkSelectParams: [TOPK_SELECT_FWD_F32, TOPK_SELECT_FWD_BF16, TOPK_SELECT_BWD_F32, TOPK_SELECT_BWD_BF16];
    DispatchParams: [PERMUTE_DISPATCH_COUNT_I32, PERMUTE_DISPATCH_SCAN_I32, PERMUTE_DISPATCH_ASSIGN_I32];
    DispatchFractionsParams: [DISPATCH_FRACTIONS_F32];
    PermuteFwdParams: [PERMUTE_FWD_F32, PERMUTE_FWD_BF16];
    PermuteBwdParams: [PERMUTE_BWD_F32, PERMUTE_BWD_BF16];
    CombineFwdParams: [COMBINE_FWD_F32, COMBINE_FWD_BF16];
    CombineBwdParams: [COMBINE_BWD_F32, COMBINE_BWD_BF16];
    GroupedGemmPlanParams: [GROUPED_GEMM_PLAN_I32];
    GroupedGemmParams: [
        GROUPED_GEMM_FWD_F32, GROUPED_GEMM_DGRAD_F32, GROUPED_GEMM_WGRAD_F32,
        GROUPED_GEMM_FWD_BF16, GROUPED_GEMM_DGRAD_BF16, GROUPED_GEMM_WGRAD_BF16,
        GROUPED_GEMM_FWD_BF16_W8S4, GROUPED_GEMM_DGRAD_BF16_W8S4, GROUPED_GEMM_WGRAD_BF16_W8S4,
        GROUPED_GEMM_FWD_BF16_W8S2, GROUPED_GEMM_DGRAD_BF16_W8S2, GROUPED_GEMM_WGRAD_BF16_W8S2,
        GROUPED_GEMM_FWD_BF16_SM90, GROUPED_GEMM_DGRAD_BF16_SM90, GROUPED_GEMM_WGRAD_BF16_SM90,
        GROUPED_GEMM_FWD_BF16_SM90X2, GROUPED_GEMM_DGRAD_BF16_SM90X2, GROUPED_GEMM_WGRAD_BF16_SM90X2
    ];
    GroupedColSumParams: [GROUPED_GEMM_DBIAS_F32, GROUPED_GEMM_DBIAS_BF16];
    CopyParams: [COPY_F32_F32, COPY_BF16_BF16, COPY_F32_BF16, COPY_BF16_F32];
    BinaryParams: [BINARY_F32, BINARY_BF16];
    UnaryParams: [UNARY_F32, UNARY_BF16];
    DropoutParams: [DROPOUT_MASK_F32, DROPOUT_MASK_BF16];
    SumToParams: [SUM_TO_F32, SUM_TO_BF16];
    SumSquaresParams: [SUMSQ_PARTIAL_F32, SUMSQ_PARTIAL_BF16];
    LayerNormParams: [LAYER_NORM_FWD_F32, LAYER_NORM_FWD_BF16, LAYER_NORM_BWD_F32, LAYER_NORM_BWD_BF16, LAYER_NORM_DPARAMS_F32, LAYER_NORM_DPARAMS_BF16];
    SoftmaxParams: [SOFTMAX_FWD_F32, SOFTMAX_FWD_BF16, SOFTMAX_BWD_F32, SOFTMAX_BWD_BF16];
    CrossEntropyParams: [CROSS_ENTROPY_FWD_F32, CROSS_ENTROPY_FWD_BF16, CROSS_ENTROPY_BWD_F32, CROSS_ENTROPY_BWD_BF16];
    EmbeddingParams: [EMBEDDING_FWD_F32, EMBEDDING_FWD_BF16, EMBEDDING_BWD_F32, EMBEDDING_BWD_BF16];
    AdamParams: [ADAM_F32];
    RowTopParams: [ROW_TOP_F32, ROW_TOP_BF16];
    EmuTestParams: [
        EMUTEST_BLOCK_REDUCE_F32, EMUTEST_TRANSPOSE_F32, EMUTEST_WARP_SCAN_I32, EMUTEST_WARP_OPS_I32,
        EMUTEST_RACE_F32, EMUTEST_ATOMIC_I32, EMUTEST_BF16_I32, EMUTEST_DIVERGENT_SHFL_I32,
        EMUTEST_DEADLOCK_I32, EMUTEST_BANK_CONFLICTS_I32, EMUTEST_VEC_LOAD_I32, PTXTEST_MMA_BF16, PTXTEST_LDMATRIX_B16, PTXTEST_CPASYNC_F32, PTXTEST_WGMMA_BF16
    ];
}

// SAFETY: a #[repr(C)] POD struct mirroring cuda/abi.h; it travels in device arrays (the grouped
// GEMM's problem list), never as a pointer-bearing Rust type.
unsafe impl cudarc::driver::DeviceRepr for GemmGroupParams {}

/// The emulator as a [`MoeKernels`](super::moe_ops::MoeKernels) backend. `seed` != 0 reshuffles the
/// fiber order after every barrier (see [`LaunchCfg::seed`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Emu {
    pub seed: u32,
}

impl Exec for Emu {
    type Buf<T: Elem> = Vec<T>;

    fn backend_name(&self) -> String {
        if self.seed == 0 {
            "emulator".into()
        } else {
            format!("emulator(seed {})", self.seed)
        }
    }
    fn upload<T: Elem>(&self, host: &[T]) -> Result<Vec<T>> {
        Ok(host.to_vec())
    }
    fn download<T: Elem>(&self, buf: &Vec<T>) -> Result<Vec<T>> {
        Ok(buf.clone())
    }
    fn addr<T: Elem>(&self, buf: &Vec<T>) -> automoe_dptr {
        addr(buf)
    }
    fn addr_mut<T: Elem>(&self, buf: &mut Vec<T>) -> automoe_dptr {
        addr_mut(buf)
    }
    unsafe fn launch<P: KernelParams>(&self, _file: &str, name: &str, g: Geometry, params: &P) -> Result<()> {
        let kernel = P::emu_kernel(name).ok_or_else(|| Error::invalid("emu::launch", format!("no emulated kernel {name}")))?;
        let cfg = LaunchCfg { seed: self.seed, ..LaunchCfg::from(g) };
        // SAFETY: forwarded from this function's contract.
        unsafe { launch(kernel, &cfg, params) }
    }
}

#[cfg(test)]
#[path = "emu_tests.rs"]
mod tests;
