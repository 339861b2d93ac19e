// The SIMT emulator's view of CUDA: just enough of the CUDA C++ dialect for the kernels in cuda/*.cu
// to compile as host C++20 and run on the CPU. See docs/EMULATOR.md for the supported subset.
//
// Model: a launch runs its blocks one after another on the calling OS thread; the threads of a block
// are fibers (ucontext) on that same OS thread, switched only at barriers (__syncthreads, warp
// intrinsics) and at thread exit. Because all fibers of a block share one OS thread, `__shared__`
// can simply be `static thread_local`, and threadIdx is a thread_local the scheduler rewrites before
// every switch into a fiber.
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>

#define AUTOMOE_EMU_ACTIVE 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __shared__ static thread_local
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct __align__(8) float2 {
    float x, y;
};
struct __align__(16) float4 {
    float x, y, z, w;
};
struct __align__(8) uint2 {
    unsigned x, y;
};
struct __align__(16) uint4 {
    unsigned x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

constexpr int warpSize = 32;

// Per-OS-thread values the scheduler sets before switching into a fiber.
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

namespace emu {
// Runtime entry points (cuda/emu/runtime.cpp).
void syncthreads();
void syncwarp(unsigned mask);
// Publishes `mine` in this lane's slot of the warp buffer, waits for the whole warp, and returns the
// value published by `src` (or `mine` when `src` is not a live lane of this warp).
uint64_t warp_exchange(unsigned mask, uint64_t mine, int src);
// Every live lane publishes `pred`; returns the bit mask of lanes in `mask` whose pred != 0.
unsigned warp_ballot(unsigned mask, int pred);
// This thread's lane index (linear thread index mod 32).
unsigned lane_id();
// Start of the launch's dynamic shared memory (`smem_bytes`, 16-byte aligned, NaN-poisoned per block).
void* dyn_smem();
size_t dyn_smem_bytes();
// Records a kernel-side error and stops the launch (the launcher returns it to Rust).
[[noreturn]] void fail(const char* msg);

template <class T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "warp shuffles move at most 8 bytes");
    uint64_t u = 0;
    std::memcpy(&u, &v, sizeof(T));
    return u;
}
template <class T>
inline T from_bits(uint64_t u) {
    T v;
    std::memcpy(&v, &u, sizeof(T));
    return v;
}
}  // namespace emu

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::syncwarp(mask); }

// Source-lane rules follow the CUDA C++ Programming Guide (warp shuffle functions): lanes are split
// into groups of `width`; an out-of-group source returns the caller's own value.
template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
    int lane = (int)emu::lane_id();
    int base = lane & ~(width - 1);
    int src = base + (src_lane & (width - 1));
    return emu::from_bits<T>(emu::warp_exchange(mask, emu::to_bits(var), src));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    int lane = (int)emu::lane_id();
    int base = lane & ~(width - 1);
    int src = lane - (int)delta;
    if (src < base) src = lane;
    return emu::from_bits<T>(emu::warp_exchange(mask, emu::to_bits(var), src));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    int lane = (int)emu::lane_id();
    int base = lane & ~(width - 1);
    int src = lane + (int)delta;
    if (src >= base + width) src = lane;
    return emu::from_bits<T>(emu::warp_exchange(mask, emu::to_bits(var), src));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
    int lane = (int)emu::lane_id();
    int base = lane & ~(width - 1);
    int src = lane ^ lane_mask;
    if (src >= base + width) src = lane;
    return emu::from_bits<T>(emu::warp_exchange(mask, emu::to_bits(var), src));
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return emu::warp_ballot(mask, pred); }
inline int __any_sync(unsigned mask, int pred) { return emu::warp_ballot(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return emu::warp_ballot(mask, pred) == (emu::warp_ballot(mask, 1)); }

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline float __int_as_float(int i) { return emu::from_bits<float>((uint32_t)i); }
inline int __float_as_int(float f) { return (int)(uint32_t)emu::to_bits(f); }
inline float __uint_as_float(unsigned u) { return emu::from_bits<float>(u); }
inline unsigned __float_as_uint(float f) { return (uint32_t)emu::to_bits(f); }
// The fast-math intrinsics map to the exact host functions; GPU results differ by a few ulp.
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }

// Atomics: blocks run one at a time, but std::atomic_ref keeps the read-modify-write indivisible
// regardless, and mirrors the hardware contract (returns the old value).
template <class T>
inline T atomicAdd(T* addr, T v) {
    return std::atomic_ref<T>(*addr).fetch_add(v);
}
template <class T>
inline T atomicSub(T* addr, T v) {
    return std::atomic_ref<T>(*addr).fetch_sub(v);
}
template <class T>
inline T atomicExch(T* addr, T v) {
    return std::atomic_ref<T>(*addr).exchange(v);
}
template <class T>
inline T atomicCAS(T* addr, T compare, T v) {
    std::atomic_ref<T>(*addr).compare_exchange_strong(compare, v);
    return compare;
}
template <class T>
inline T atomicMax(T* addr, T v) {
    std::atomic_ref<T> a(*addr);
    T old = a.load();
    while (old < v && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}
template <class T>
inline T atomicMin(T* addr, T v) {
    std::atomic_ref<T> a(*addr);
    T old = a.load();
    while (v < old && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}

// bf16 with the bit-exact conversions of cuda_bf16.h: round-to-nearest-even, NaN -> 0x7fff.
struct __nv_bfloat16 {
    unsigned short __x;
};
inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u = (uint32_t)emu::to_bits(f);
    __nv_bfloat16 r;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        r.__x = 0x7fff;
    } else {
        u += 0x7fffu + ((u >> 16) & 1u);
        r.__x = (unsigned short)(u >> 16);
    }
    return r;
}
inline float __bfloat162float(__nv_bfloat16 b) { return emu::from_bits<float>((uint32_t)b.__x << 16); }

// Host-side launch plumbing used by the generated launchers (cuda/emu/launchers.cpp).
namespace emu {
struct LaunchCfg {  // mirrors automoe::cuda::emu::LaunchCfg (#[repr(C)])
    uint32_t grid[3];
    uint32_t block[3];
    uint32_t smem_bytes;
    uint32_t seed;  // 0: fibers run in thread order; otherwise a seeded shuffle after every barrier
};
// Runs `body(arg)` as the kernel of every thread of every block. Returns 0 or a nonzero status with
// the message available from emu_last_error().
int launch(const LaunchCfg* cfg, void (*body)(const void*), const void* arg);
// Shared-memory bank accounting of one launch (docs/EMULATOR.md, "Bank conflicts"), mirrored by
// automoe::cuda::emu::SmemStats (#[repr(C)]). A phase is the group of lanes one shared-memory
// wavefront could serve (8 lanes for 16-byte accesses); wavefronts == phases means conflict-free.
struct SmemStats {
    uint64_t cp_async_phases, cp_async_wavefronts;  // cp.async's 16-byte shared-memory writes
    uint64_t ldmatrix_phases, ldmatrix_wavefronts;  // ldmatrix's 16-byte row reads
    uint64_t untracked;                             // such accesses outside dynamic shared memory
};
}  // namespace emu
