// The bf16 grouped-GEMM configurations other than the default (src/cuda/grouped_gemm.rs,
// BF16_KERNELS), kept so that one device run can compare them (benches/cuda_grouped_gemm.rs) and
// a process can switch to one (AUTOMOE_GEMM_BF16). A program of its own: NVRTC compiles it only
// when one of them is launched. The kernels are in grouped_gemm.cuh.
#include "grouped_gemm.cuh"

// mma.sync: 8 warps of 64x32 with four stages, and the same with two (the first tensor-core
// kernel, the baseline the others are measured against).
AUTOMOE_GEMM_BF16_ENTRIES(_w8s4, 2, 4, 4)
AUTOMOE_GEMM_BF16_ENTRIES(_w8s2, 2, 4, 2)

// wgmma (sm_90a; empty stubs elsewhere): one warpgroup on a 128x128 tile with three stages, and
// two warpgroups sharing the B tile of a 256x128 tile with four.
AUTOMOE_GEMM_WGMMA_ENTRIES(_sm90, 1, AUTOMOE_GEMM_WGMMA_STAGES)
AUTOMOE_GEMM_WGMMA_ENTRIES(_sm90x2, 2, 4)
