// Grouped variable-width GEMMs: the entry points of the plan kernel, the f32 kernels, the default
// bf16 configuration and the bias gradients. The kernels themselves, and how they work, are in
// grouped_gemm.cuh.
#include "grouped_gemm.cuh"

extern "C" __global__ void grouped_gemm_plan_i32(GroupedGemmPlanParams p) { automoe::ggemm::plan(p); }

extern "C" __global__ void __launch_bounds__(AUTOMOE_GEMM_THREADS, 2) grouped_gemm_fwd_f32(GroupedGemmParams p) {
    automoe::ggemm::simt_f32<kFwd>(p);
}
extern "C" __global__ void __launch_bounds__(AUTOMOE_GEMM_THREADS, 2) grouped_gemm_dgrad_f32(GroupedGemmParams p) {
    automoe::ggemm::simt_f32<kDgrad>(p);
}
extern "C" __global__ void __launch_bounds__(AUTOMOE_GEMM_THREADS, 2) grouped_gemm_wgrad_f32(GroupedGemmParams p) {
    automoe::ggemm::simt_f32<kWgrad>(p);
}
// The default bf16 configuration (abi.h); the others, which exist so that a device run can compare
// them, are in grouped_gemm_variants.cu: a program of their own, so that callers of the default
// never wait for NVRTC to compile them (on sm_90a: 19 s for this file, 37 s for that one, measured
// on the 2-core development machine).
AUTOMOE_GEMM_BF16_ENTRIES(, AUTOMOE_GEMM_BF16_WARPS_M, AUTOMOE_GEMM_BF16_WARPS_N, AUTOMOE_GEMM_BF16_STAGES)

extern "C" __global__ void __launch_bounds__(AUTOMOE_GEMM_THREADS) grouped_gemm_dbias_f32(GroupedColSumParams p) {
    automoe::ggemm::colsum<float>(p);
}
extern "C" __global__ void __launch_bounds__(AUTOMOE_GEMM_THREADS) grouped_gemm_dbias_bf16(GroupedColSumParams p) {
    automoe::ggemm::colsum<__nv_bfloat16>(p);
}
