// Helpers shared by every kernel file. Compiled two ways: by NVRTC for the GPU, and as host C++20
// against cuda/emu/emu.h for the SIMT emulator (AUTOMOE_EMU defined). Anything that is not plain
// CUDA C++ from the subset in docs/EMULATOR.md (inline PTX in particular) must live here as one
// __device__ helper with an emulator twin.
#pragma once

#ifdef AUTOMOE_EMU
#include "emu/emu.h"
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

// Dynamic shared memory: `extern __shared__` in CUDA, the launch's buffer in the emulator.
#ifdef AUTOMOE_EMU
#define AUTOMOE_DYN_SMEM(type, name) type* name = reinterpret_cast<type*>(emu::dyn_smem())
#else
#define AUTOMOE_DYN_SMEM(type, name)                 \
    extern __shared__ __align__(16) unsigned char automoe_dyn_smem_[]; \
    type* name = reinterpret_cast<type*>(automoe_dyn_smem_)
#endif

}  // namespace automoe
