// Self-tests of the inline-PTX helpers in common.cuh. Compiled by NVRTC with the real kernels (so
// ptxas checks the inline assembly for sm_80 and sm_90a) and by the emulator (against the twins in
// cuda/emu/ptx.h). tests/ptx_helpers.rs runs them on every backend and checks the results against
// the PTX ISA's documented fragment layouts, written out independently in Rust.
#include "common.cuh"

using automoe::ptr;

// One warp: D = A * B + C with A [16, 16] bf16 row-major at in[0..256), B^T [8, 16] bf16 (B
// column-major) at in[256..384), C [16, 8] f32 read from out and overwritten with D. Fragments are
// loaded from global memory with the documented layout (see cuda/emu/ptx.h).
extern "C" __global__ void ptxtest_mma_bf16(EmuTestParams p) {
    const unsigned short* in = ptr<const unsigned short>(p.in);  // [384] bf16 bits: A then B^T
    float* out = ptr<float>(p.out);                              // [16, 8] C in, D out
    const unsigned short* A = in;
    const unsigned short* Bt = in + 256;
    const int l = (int)threadIdx.x, g = l >> 2, tq = l & 3;
    unsigned a[4], b[2];
    float c[4], d[4];
    for (int r = 0; r < 4; ++r) {
        const int row = g + 8 * (r & 1), col = 2 * tq + 8 * (r >> 1);
        a[r] = (unsigned)A[row * 16 + col] | ((unsigned)A[row * 16 + col + 1] << 16);
    }
    for (int r = 0; r < 2; ++r) {
        const int k = 2 * tq + 8 * r;
        b[r] = (unsigned)Bt[g * 16 + k] | ((unsigned)Bt[g * 16 + k + 1] << 16);
    }
    for (int i = 0; i < 4; ++i) c[i] = out[(g + 8 * (i >> 1)) * 8 + 2 * tq + (i & 1)];
    __syncwarp();
    automoe::mma_m16n8k16_bf16(d, a, b, c);
    for (int i = 0; i < 4; ++i) out[(g + 8 * (i >> 1)) * 8 + 2 * tq + (i & 1)] = d[i];
}

// One warp: four 8x8 b16 matrices in[m*64 + j*8 + c] staged in shared memory with rows 16 elements
// apart (only the first 8 hold the matrix, so a helper that assumed packed rows would read the
// 0xdead filler); lane 8m + j passes row j of matrix m; out[lane*4 + m] = register m.
// flag != 0 selects .trans.
extern "C" __global__ void ptxtest_ldmatrix_b16(EmuTestParams p) {
    __shared__ __align__(16) unsigned short tile[32 * 16];
    const unsigned short* in = ptr<const unsigned short>(p.in);  // [4, 8, 8]
    unsigned* out = ptr<unsigned>(p.out);                        // [32, 4]
    const int l = (int)threadIdx.x;
    for (int c = 0; c < 16; ++c) tile[l * 16 + c] = c < 8 ? in[l * 8 + c] : (unsigned short)0xdead;
    __syncthreads();
    unsigned r[4];
    if (p.flag)
        automoe::ldmatrix_x4_trans(r, &tile[l * 16]);
    else
        automoe::ldmatrix_x4(r, &tile[l * 16]);
    for (int m = 0; m < 4; ++m) out[l * 4 + m] = r[m];
}

// One block of 32 threads: thread t copies 16-byte chunks t and 32 + t of in (f32 [256]) into
// dynamic shared memory as two commit groups, the last chunk with only 8 source bytes (zero-fill).
// flag 0: wait for both groups; flag 1: wait_group 1 (only the first group is guaranteed) and read
// anyway. out = the whole shared buffer.
extern "C" __global__ void ptxtest_cpasync_f32(EmuTestParams p) {
    AUTOMOE_DYN_SMEM(float, s);                  // [256]
    const float* in = ptr<const float>(p.in);    // [256]
    float* out = ptr<float>(p.out);              // [256]
    const int t = (int)threadIdx.x;
    automoe::cp_async_16(s + 4 * t, in + 4 * t, 16);
    automoe::cp_async_commit();
    automoe::cp_async_16(s + 4 * (32 + t), in + 4 * (32 + t), t == 31 ? 8 : 16);
    automoe::cp_async_commit();
    if (p.flag)
        automoe::cp_async_wait<1>();
    else
        automoe::cp_async_wait<0>();
    __syncthreads();
    for (int i = t; i < 256; i += 32) out[i] = s[i];
}
