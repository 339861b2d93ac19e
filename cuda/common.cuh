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

// Vector loads and stores of global or shared memory (V = uint4, float4, float2, unsigned, ...):
// the address must be aligned to sizeof(V). A device faults otherwise; x86 does not, so the
// emulator build checks, and every vector access of device memory goes through these.
template <class V>
__device__ __forceinline__ void check_vec_aligned(const void* p) {
#ifdef AUTOMOE_EMU
    if ((unsigned long long)p % sizeof(V) != 0) emu::fail("a vector load or store at an address not aligned to its size (a device faults)");
#else
    (void)p;
#endif
}
template <class V>
__device__ __forceinline__ V load_vec(const void* p) {
    check_vec_aligned<V>(p);
    return *reinterpret_cast<const V*>(p);
}
template <class V>
__device__ __forceinline__ void store_vec(void* p, const V& v) {
    check_vec_aligned<V>(p);
    *reinterpret_cast<V*>(p) = v;
}

// Two adjacent elements in one 8- or 4-byte store; p must be aligned to twice the element size.
__device__ __forceinline__ void store2(float* p, float a, float b) { store_vec<float2>(p, make_float2(a, b)); }
__device__ __forceinline__ void store2(__nv_bfloat16* p, float a, float b) {
    const __nv_bfloat16 v[2] = {from_f32<__nv_bfloat16>(a), from_f32<__nv_bfloat16>(b)};
    store_vec<unsigned>(p, *reinterpret_cast<const unsigned*>(v));
}
// ... and the matching loads.
__device__ __forceinline__ void load2(const float* p, float& a, float& b) {
    const float2 v = load_vec<float2>(p);
    a = v.x, b = v.y;
}
__device__ __forceinline__ void load2(const __nv_bfloat16* p, float& a, float& b) {
    const unsigned u = load_vec<unsigned>(p);
    const __nv_bfloat16* v = reinterpret_cast<const __nv_bfloat16*>(&u);
    a = to_f32(v[0]), b = to_f32(v[1]);
}

// -inf without <math.h> (NVRTC compiles with no system headers).
__device__ __forceinline__ float neg_inf() { return __int_as_float((int)0xff800000u); }

__device__ __forceinline__ unsigned lane_id() { return threadIdx.x & 31u; }

// v, which the caller knows to be the same in every lane of the warp, as lane 0's: the compiler
// then knows it too, and keeps it and what derives from it in uniform registers (one shuffle).
__device__ __forceinline__ int warp_uniform(int v) { return __shfl_sync(0xffffffffu, v, 0); }

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
// The same for a chunk known to be whole: no source size, so no zero-fill arithmetic around it.
__device__ __forceinline__ void cp_async_16_full(void* smem_dst, const void* gmem_src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem_dst)), "l"(gmem_src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// ---- Hopper (sm_90a only): warpgroup MMA. Twins in cuda/emu/ptx.h.

// Orders this thread's accumulator registers and shared-memory writes before the next wgmma.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
// The wgmma issued since the last commit become one group.
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// All but the newest N groups are complete (their accumulators readable, their operands free).
template <int N>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Pins accumulator registers across the wgmma fences (CUTLASS's warpgroup_fence_operand): an empty
// asm that reads and writes each one, so that the compiler can neither sink the accumulators'
// zeroing below wgmma.fence nor hoist their reads above wgmma.wait_group; PTX leaves a register
// access between those and the wgmma that uses the register undefined.
template <int N>
__device__ __forceinline__ void wgmma_fence_operands(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
// Makes shared-memory writes by ordinary stores and cp.async visible to wgmma's (async proxy) reads.
__device__ __forceinline__ void fence_proxy_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// D += A B (scale-d = 1), m64n128k16, bf16 operands in shared memory given by matrix descriptors (wgmma_desc),
// f32 accumulators: 64 per thread of the warpgroup (layout at the twin). kTransA / kTransB: the
// operand is MN-major in shared memory (else K-major).
template <int kTransA, int kTransB>
__device__ __forceinline__ void wgmma_m64n128k16_bf16(float d[64], unsigned long long desc_a, unsigned long long desc_b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %68, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, %64, %65, p, 1, 1, %66, %67;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(desc_a), "l"(desc_b), "n"(kTransA), "n"(kTransB), "r"(1));
}
#endif
#endif

// wgmma matrix descriptor of a no-swizzle operand starting at p in shared memory (PTX ISA, "Matrix
// Descriptor Format"): start address, leading- and stride-dimension byte offsets (their meaning for
// K- and MN-major operands: the layout comment at the twin, cuda/emu/ptx.h), each encoded >> 4.
__device__ __forceinline__ unsigned long long wgmma_desc(const void* p, unsigned lbo_bytes, unsigned sbo_bytes) {
    return (unsigned long long)((smem_addr(p) & 0x3ffffu) >> 4) | ((unsigned long long)((lbo_bytes & 0x3ffffu) >> 4) << 16) |
           ((unsigned long long)((sbo_bytes & 0x3ffffu) >> 4) << 32);
}

// The descriptor of the same layout `bytes` (a multiple of 16) further into shared memory: only the
// start address field (bits 0-13, the address >> 4) changes, and it cannot carry into the bits
// above it, since a block's shared memory (at most 227 KiB) lies inside the field's 256 KiB. A 32-bit
// add on the low word, where forming the descriptor from the address again costs ~8 instructions.
__device__ __forceinline__ unsigned long long wgmma_desc_add(unsigned long long desc, unsigned bytes) {
    return (desc & 0xffffffff00000000ull) | (unsigned)((unsigned)desc + (bytes >> 4));
}

}  // namespace automoe
