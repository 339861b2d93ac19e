// Helpers shared by every kernel file. Compiled two ways: by NVRTC for the GPU, and as host C++20
// against cuda/emu/emu.h for the SIMT emulator (AUTOMOE_EMU defined). Anything that is not plain
// CUDA C++ from the subset in docs/EMULATOR.md (inline PTX in particular) must live here as one
// __device__ helper with an emulator twin.
#pragma once

#ifdef AUTOMOE_EMU
#include "emu/emu.h"
#include "emu/ptx.h"  // the emulator twins of the inline-PTX helpers below
#else
#include <cuda_bf16.h>
#endif

#include "abi.h"

namespace automoe {

template <class T>
__device__ __forceinline__ T* ptr(automoe_dptr a) {
    return reinterpret_cast<T*>(a);
}

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
    return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
    return __float2bfloat16(v);
}

// Two adjacent elements in one 8- or 4-byte store; p must be aligned to twice the element size.
__device__ __forceinline__ void store2(float* p, float a, float b) { *reinterpret_cast<float2*>(p) = make_float2(a, b); }
__device__ __forceinline__ void store2(__nv_bfloat16* p, float a, float b) {
    const __nv_bfloat16 v[2] = {from_f32<__nv_bfloat16>(a), from_f32<__nv_bfloat16>(b)};
    *reinterpret_cast<unsigned*>(p) = *reinterpret_cast<const unsigned*>(v);
}

// -inf without <math.h> (NVRTC compiles with no system headers).
__device__ __forceinline__ float neg_inf() { return __int_as_float((int)0xff800000u); }

__device__ __forceinline__ unsigned lane_id() { return threadIdx.x & 31u; }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Offset of linear index i (row-major over shape[0..rank)) in a view with these strides.
__device__ __forceinline__ long long strided_offset(long long i, int rank, const long long* shape, const long long* stride) {
    long long off = 0;
    for (int d = rank - 1; d >= 0; --d) {
        long long s = shape[d];
        long long q = i / s;
        off += (i - q * s) * stride[d];
        i = q;
    }
    return off;
}

// Tree sum of one value per thread over a block of kThreads threads (a multiple of 32, at most
// 1024), in a fixed order; every thread gets the total. Every thread of the block must call it.
template <int kThreads>
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float warp_totals[kThreads / 32];
    v = warp_sum(v);
    if (lane_id() == 0) warp_totals[threadIdx.x >> 5] = v;
    __syncthreads();
    float t = lane_id() < kThreads / 32 ? warp_totals[lane_id()] : 0.0f;
    t = warp_sum(t);
    __syncthreads();  // warp_totals is reused by the next call
    return t;
}

// Block maximum, as block_sum.
template <int kThreads>
__device__ __forceinline__ float block_max(float v) {
    __shared__ float warp_maxes[kThreads / 32];
    v = warp_max(v);
    if (lane_id() == 0) warp_maxes[threadIdx.x >> 5] = v;
    __syncthreads();
    float t = lane_id() < kThreads / 32 ? warp_maxes[lane_id()] : neg_inf();
    t = warp_max(t);
    __syncthreads();
    return t;
}

// Dynamic shared memory: `extern __shared__` in CUDA, the launch's buffer in the emulator.
#ifdef AUTOMOE_EMU
#define AUTOMOE_DYN_SMEM(type, name) type* name = reinterpret_cast<type*>(emu::dyn_smem())
#else
#define AUTOMOE_DYN_SMEM(type, name)                 \
    extern __shared__ __align__(16) unsigned char automoe_dyn_smem_[]; \
    type* name = reinterpret_cast<type*>(automoe_dyn_smem_)
#endif

#ifndef AUTOMOE_EMU
// ---- Inline PTX: one helper per instruction. Each has an emulator twin in cuda/emu/ptx.h with the
// PTX ISA's documented semantics, and a self-test (cuda/ptx_selftest.cu, tests/ptx_helpers.rs).

// D = A * B + C, m16n8k16, A row-major bf16, B column-major bf16, f32 accumulators (sm_80+).
__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

__device__ __forceinline__ unsigned smem_addr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }

// Four 8x8 b16 matrices from shared memory; lane 8m + j passes row j of matrix m.
__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned r[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(row)));
}

// 16-byte asynchronous global -> shared copy; bytes past src_bytes are zero-filled.
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem_dst)), "l"(gmem_src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
#endif

}  // namespace automoe
