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
// dynamic shared memory as two commit groups, the first by cp_async_16_full, the second by
// cp_async_16 with the last chunk's source only 8 bytes (zero-fill).
// flag 0: wait for both groups; flag 1: wait_group 1 (only the first group is guaranteed) and read
// anyway. out = the whole shared buffer.
extern "C" __global__ void ptxtest_cpasync_f32(EmuTestParams p) {
    AUTOMOE_DYN_SMEM(float, s);                  // [256]
    const float* in = ptr<const float>(p.in);    // [256]
    float* out = ptr<float>(p.out);              // [256]
    const int t = (int)threadIdx.x;
    automoe::cp_async_16_full(s + 4 * t, in + 4 * t);
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

// One warpgroup (128 threads): D = C + A B with wgmma.m64n128k16 from shared memory. in: A [64, 16]
// then B [16, 128], bf16 row-major; out: C [64, 128] f32 in, D out, exchanged with the accumulator
// fragment layout. The operands are staged element by element in the canonical no-swizzle layouts
// with the K-direction core matrices far apart (LBO = the whole MN extent) and the MN-direction
// ones adjacent (SBO = 128 bytes), the opposite arrangement of cuda/grouped_gemm.cu's K-major tiles,
// so the two together check both strides' roles. flag bit 0: A MN-major, bit 1: B MN-major.
// sm_90a (and the emulator) only; elsewhere the entry point does nothing.
namespace wgmma_test {  // its own namespace: the dynamic shared memory name is declared again
#if defined(AUTOMOE_EMU) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
template <int kTransA, int kTransB>
__device__ __forceinline__ void ptxtest_wgmma(const EmuTestParams& p) {
    AUTOMOE_DYN_SMEM(unsigned short, s);                         // A at byte 0, B at byte 4096
    const unsigned short* in = ptr<const unsigned short>(p.in);  // A [64, 16], B [16, 128]
    float* out = ptr<float>(p.out);                              // [64, 128]
    const int t = (int)threadIdx.x;
    // Byte offset of element (mn, k) (automoe::wgmma_operand's formulas, cuda/emu/ptx.h).
    auto at = [](bool mn_major, int mn, int k, int lbo) {
        return mn_major ? 2 * (mn % 8) + 128 * (mn / 8) + 16 * (k % 8) + lbo * (k / 8)
                        : 16 * (mn % 8) + 128 * (mn / 8) + 2 * (k % 8) + lbo * (k / 8);
    };
    for (int i = t; i < 64 * 16; i += 128) s[at(kTransA, i / 16, i % 16, 1024) / 2] = in[i];
    for (int i = t; i < 16 * 128; i += 128) s[(4096 + at(kTransB, i % 128, i / 128, 2048)) / 2] = in[1024 + i];
    float d[64];
    const int w = t / 32, g = (t % 32) / 4, tq = t % 4;
    for (int v = 0; v < 64; ++v) d[v] = out[(16 * w + g + 8 * ((v >> 1) & 1)) * 128 + 8 * (v >> 2) + 2 * tq + (v & 1)];
    automoe::fence_proxy_async_shared();
    __syncthreads();
    automoe::wgmma_fence_operands(d);
    automoe::wgmma_fence();
    automoe::wgmma_m64n128k16_bf16<kTransA, kTransB>(d, automoe::wgmma_desc(s, 1024, 128), automoe::wgmma_desc(s + 2048, 2048, 128));
    automoe::wgmma_commit();
    automoe::wgmma_wait<0>();
    automoe::wgmma_fence_operands(d);
    for (int v = 0; v < 64; ++v) out[(16 * w + g + 8 * ((v >> 1) & 1)) * 128 + 8 * (v >> 2) + 2 * tq + (v & 1)] = d[v];
}
#else
template <int kTransA, int kTransB>
__device__ __forceinline__ void ptxtest_wgmma(const EmuTestParams&) {}
#endif
}  // namespace wgmma_test

extern "C" __global__ void __launch_bounds__(128) ptxtest_wgmma_bf16(EmuTestParams p) {
    switch (p.flag & 3) {
        case 0: wgmma_test::ptxtest_wgmma<0, 0>(p); break;
        case 1: wgmma_test::ptxtest_wgmma<1, 0>(p); break;
        case 2: wgmma_test::ptxtest_wgmma<0, 1>(p); break;
        default: wgmma_test::ptxtest_wgmma<1, 1>(p); break;
    }
}
