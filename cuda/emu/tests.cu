// Self-test kernels for the emulator (run from src/cuda/emu.rs tests). Each exercises one mechanism
// the real kernels rely on; written as ordinary CUDA so they would also run on a device.
#include "../common.cuh"

using automoe::ptr;

// Block sum of in[0..n) (n <= blockDim.x, blockDim.x a power of two) with a shared-memory tree;
// out[blockIdx.x] = sum. Exercises __shared__ and __syncthreads.
extern "C" __global__ void emutest_block_reduce_f32(EmuTestParams p) {
    __shared__ float s[1024];
    const float* in = ptr<const float>(p.in);  // [gridDim.x, n]
    float* out = ptr<float>(p.out);            // [gridDim.x]
    unsigned t = threadIdx.x;
    s[t] = t < (unsigned)p.n ? in[blockIdx.x * p.n + t] : 0.0f;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (t < half) s[t] += s[t + half];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

// out = in^T for an n x n matrix through a padded 32x33 shared tile; block (32, 8), grid of tiles.
extern "C" __global__ void emutest_transpose_f32(EmuTestParams p) {
    __shared__ float tile[32][33];
    const float* in = ptr<const float>(p.in);  // [n, n]
    float* out = ptr<float>(p.out);            // [n, n]
    int n = p.n;
    int x = blockIdx.x * 32 + threadIdx.x;
    for (int j = threadIdx.y; j < 32; j += blockDim.y) {
        int y = blockIdx.y * 32 + j;
        if (x < n && y < n) tile[j][threadIdx.x] = in[y * n + x];
    }
    __syncthreads();
    x = blockIdx.y * 32 + threadIdx.x;
    for (int j = threadIdx.y; j < 32; j += blockDim.y) {
        int y = blockIdx.x * 32 + j;
        if (x < n && y < n) out[y * n + x] = tile[threadIdx.x][j];
    }
}

// Inclusive prefix sum of each warp's 32 ints with __shfl_up_sync; out[i] = sum(in[warp start..=i]).
extern "C" __global__ void emutest_warp_scan_i32(EmuTestParams p) {
    const int* in = ptr<const int>(p.in);  // [n], n = gridDim.x * blockDim.x
    int* out = ptr<int>(p.out);            // [n]
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = in[i];
    unsigned lane = automoe::lane_id();
    for (unsigned o = 1; o < 32; o <<= 1) {
        int u = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += u;
    }
    out[i] = v;
}

// The other warp intrinsics, one result column each: out[i*8 + c] for thread i (one block of n).
extern "C" __global__ void emutest_warp_ops_i32(EmuTestParams p) {
    const int* in = ptr<const int>(p.in);  // [n]
    int* out = ptr<int>(p.out);            // [n, 8]
    unsigned i = threadIdx.x;
    int v = in[i];
    out[i * 8 + 0] = __shfl_sync(0xffffffffu, v, (v & 31));
    out[i * 8 + 1] = __shfl_xor_sync(0xffffffffu, v, 5);
    out[i * 8 + 2] = __shfl_down_sync(0xffffffffu, v, 3);
    out[i * 8 + 3] = (int)__ballot_sync(0xffffffffu, v > 0);
    out[i * 8 + 4] = __any_sync(0xffffffffu, v == 7);
    out[i * 8 + 5] = __all_sync(0xffffffffu, v > -90);
    out[i * 8 + 6] = __popc((unsigned)v);
    out[i * 8 + 7] = __ffs(v);
}

// out[t] = in[(t+1) % n] through shared memory. With flag = 1 a __syncthreads separates the write
// from the read; with flag = 0 it is missing (a planted race): threads read neighbours' slots before
// the neighbours wrote them. Also passes the data through dynamic shared memory.
extern "C" __global__ void emutest_race_f32(EmuTestParams p) {
    AUTOMOE_DYN_SMEM(float, s);
    const float* in = ptr<const float>(p.in);  // [n], n = blockDim.x
    float* out = ptr<float>(p.out);            // [n]
    unsigned t = threadIdx.x;
    s[t] = in[t];
    if (p.flag) __syncthreads();
    out[t] = s[(t + 1) % p.n];
}

// Integer atomics: every thread of every block adds in[i] into out[in[i] % n] (a histogram).
extern "C" __global__ void emutest_atomic_i32(EmuTestParams p) {
    const int* in = ptr<const int>(p.in);  // [gridDim.x * blockDim.x]
    int* out = ptr<int>(p.out);            // [n], zeroed by the caller
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(&out[in[i] % p.n], 1);
}

// bf16 round trip: out[i] = bits of __float2bfloat16(in[i]) (as int), for comparing with `half`.
extern "C" __global__ void emutest_bf16_i32(EmuTestParams p) {
    const float* in = ptr<const float>(p.in);  // [n]
    int* out = ptr<int>(p.out);                // [n]
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (unsigned)p.n) {
        __nv_bfloat16 b = __float2bfloat16(in[i]);
        out[i] = (int)__float_as_uint(__bfloat162float(b)) >> 16;
    }
}

// A warp shuffle reached by only half of the warp: the emulator must report a deadlock, not hang.
extern "C" __global__ void emutest_divergent_shfl_i32(EmuTestParams p) {
    int* out = ptr<int>(p.out);  // [blockDim.x]
    if (threadIdx.x < 16) {
        out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
    }
}

// Half of warp 0 waits at __syncthreads while the other half waits in a shuffle that needs the
// whole warp: neither barrier can complete, and the emulator must say so instead of hanging.
extern "C" __global__ void emutest_deadlock_i32(EmuTestParams p) {
    int* out = ptr<int>(p.out);  // [blockDim.x]
    if (threadIdx.x < 16) {
        __syncthreads();
        out[threadIdx.x] = 0;
    } else {
        out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
    }
}

// Bank accounting (docs/EMULATOR.md, "Bank conflicts"): one warp; lane l's cp.async writes 16 bytes
// of in at byte offset (l * n) % 4096 of dynamic shared memory (4 KiB + 16), or of a static
// __shared__ buffer when flag < 0 (not accounted); then, when flag >= 0, lane l gives row address
// (l * flag) % 4096 to one ldmatrix.x4. n and flag are multiples of 16. out: the ldmatrix registers.
extern "C" __global__ void emutest_bank_conflicts_i32(EmuTestParams p) {
    AUTOMOE_DYN_SMEM(unsigned char, dyn);      // [4096 + 16]
    __shared__ __align__(16) unsigned char st[4096 + 16];
    const int* in = ptr<const int>(p.in);      // [32, 4]
    int* out = ptr<int>(p.out);                // [32, 4]
    const unsigned l = automoe::lane_id();
    unsigned char* s = p.flag < 0 ? st : dyn;
    automoe::cp_async_16(s + (l * (unsigned)p.n) % 4096, in + 4 * l, 16);
    automoe::cp_async_commit();
    automoe::cp_async_wait<0>();
    __syncwarp();
    if (p.flag < 0) return;
    unsigned r[4];
    automoe::ldmatrix_x4(r, dyn + (l * (unsigned)p.flag) % 4096);
    for (int m = 0; m < 4; ++m) out[4 * l + m] = (int)r[m];
}

// One thread: out[0..4) = the 16 bytes at byte offset n of in, read as one uint4 through
// automoe::load_vec (n not a multiple of 16: the emulator must report it, as a device would fault).
extern "C" __global__ void emutest_vec_load_i32(EmuTestParams p) {
    const unsigned char* in = ptr<const unsigned char>(p.in);  // [n + 16]
    const uint4 v = automoe::load_vec<uint4>(in + p.n);
    automoe::store_vec<uint4>(ptr<int>(p.out), v);             // [4]
}
