// Emulator twins of the inline-PTX helpers in cuda/common.cuh, implementing the PTX ISA's documented
// semantics (sections cited per helper). They run on one warp's fibers and exchange the lanes'
// registers through the runtime's per-warp buffer, exactly as the instruction does in hardware.
#pragma once

#include "emu.h"

namespace emu {
// Copies `bytes` (<= 64) from every live lane into all[lane * bytes]; the whole warp must call it.
void warp_gather(const void* mine, unsigned bytes, void* all);
// cp.async for the calling thread: queued, performed when a later cp_async_wait retires its group.
void cp_async(void* dst, const void* src, unsigned bytes, unsigned src_bytes);
void cp_async_commit();
void cp_async_wait(int n);
// wgmma for the calling thread: `op` (its share of the warpgroup's product) is queued and performed
// when a later wgmma_wait of any thread of its warpgroup retires its group (runtime.cpp).
void wgmma_issue(std::function<void()> op);
void wgmma_commit();
void wgmma_wait(int n);
// Checks the alignment of one ldmatrix.x4 and accounts its banks: rows[8m + j] is row j of matrix m
// (called by one lane).
void check_ldmatrix_rows(const void* const rows[32]);
}  // namespace emu

namespace automoe {

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 d, a, b, c  (PTX ISA, "Matrix
// Fragments for mma.m16n8k16 with floating point type"). groupID = lane >> 2, tq = lane % 4:
//   A 16x16: a[r] holds elements i = 2r, 2r+1 (low half first); row = groupID + 8*(r % 2),
//            col = 2*tq + (i & 1) + 8*(i >= 4)
//   B 16x8:  b[r] holds i = 2r, 2r+1; row = 2*tq + (i & 1) + 8*(i >= 2), col = groupID
//   C/D 16x8: c[i]; row = groupID + 8*(i >= 2), col = 2*tq + (i & 1)
// Products of bf16 are exact in f32; the sum runs in k order in f32 (hardware's internal order and
// rounding may differ in the last bits).
__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
    struct Frag {
        unsigned a[4];
        unsigned b[2];
        float c[4];
    } mine, all[32];
    for (int i = 0; i < 4; ++i) mine.a[i] = a[i], mine.c[i] = c[i];
    mine.b[0] = b[0];
    mine.b[1] = b[1];
    emu::warp_gather(&mine, sizeof(Frag), all);
    auto half = [](unsigned reg, int i) { return __uint_as_float(((reg >> (16 * (i & 1))) & 0xffffu) << 16); };
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; ++l) {
        const int g = l >> 2, tq = l & 3;
        for (int i = 0; i < 8; ++i) A[g + 8 * ((i >> 1) & 1)][2 * tq + (i & 1) + 8 * (i >= 4)] = half(all[l].a[i >> 1], i);
        for (int i = 0; i < 4; ++i) B[2 * tq + (i & 1) + 8 * (i >= 2)][g] = half(all[l].b[i >> 1], i);
        for (int i = 0; i < 4; ++i) C[g + 8 * (i >= 2)][2 * tq + (i & 1)] = all[l].c[i];
    }
    const int l = (int)emu::lane_id(), g = l >> 2, tq = l & 3;
    for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i >= 2), col = 2 * tq + (i & 1);
        float acc = C[row][col];
        for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
        d[i] = acc;
    }
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 r, [row]  (PTX ISA, "Warp-level matrix
// load instruction: ldmatrix"): lane 8m + j
// supplies the address of row j of matrix m (16 bytes); lane l receives in r[m] the elements
// (l/4, 2(l%4)) and (l/4, 2(l%4)+1) of matrix m, the lower column in the low half. With .trans the
// matrix is read transposed: elements (2(l%4), l/4) and (2(l%4)+1, l/4).
__device__ __forceinline__ void ldmatrix_x4_impl(unsigned r[4], const void* row, bool trans) {
    const void* rows[32];
    emu::warp_gather(&row, sizeof(row), rows);
    const int l = (int)emu::lane_id();
    if (l == 0) emu::check_ldmatrix_rows(rows);
    for (int m = 0; m < 4; ++m) {
        unsigned short lo, hi;
        if (!trans) {
            const unsigned short* p = static_cast<const unsigned short*>(rows[8 * m + l / 4]);
            lo = p[2 * (l % 4)];
            hi = p[2 * (l % 4) + 1];
        } else {
            lo = static_cast<const unsigned short*>(rows[8 * m + 2 * (l % 4)])[l / 4];
            hi = static_cast<const unsigned short*>(rows[8 * m + 2 * (l % 4) + 1])[l / 4];
        }
        r[m] = (unsigned)lo | ((unsigned)hi << 16);
    }
}
__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const void* row) { ldmatrix_x4_impl(r, row, false); }
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned r[4], const void* row) { ldmatrix_x4_impl(r, row, true); }

// cp.async.cg.shared.global [dst], [src], 16, src_bytes  (PTX ISA, "cp.async"): copies 16 bytes,
// the bytes past src_bytes are zero-filled; completion is only guaranteed by cp.async.wait_group
// ("cp.async.wait_group / cp.async.wait_all"), so the twin performs the copy at that point, not before: a kernel that reads the
// destination without waiting sees the old (poisoned) contents.
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, int src_bytes) {
    emu::cp_async(smem_dst, gmem_src, 16, (unsigned)src_bytes);
}
// cp.async with no source size: all 16 bytes are read.
__device__ __forceinline__ void cp_async_16_full(void* smem_dst, const void* gmem_src) { emu::cp_async(smem_dst, gmem_src, 16, 16); }
// cp.async.commit_group: the calling thread's uncommitted copies become one group.
__device__ __forceinline__ void cp_async_commit() { emu::cp_async_commit(); }
// cp.async.wait_group N: all but the N most recent groups of the calling thread are complete.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    emu::cp_async_wait(N);
}

// The "shared address" of a pointer into dynamic shared memory (what cvta.to.shared gives on a
// device), used in wgmma matrix descriptors: its byte offset from the launch's dynamic shared memory.
__device__ __forceinline__ unsigned smem_addr(const void* p) {
    const unsigned char* base = static_cast<const unsigned char*>(emu::dyn_smem());
    const unsigned char* q = static_cast<const unsigned char*>(p);
    if (q < base || q >= base + emu::dyn_smem_bytes()) emu::fail("a wgmma operand outside dynamic shared memory");
    return (unsigned)(q - base);
}

// wgmma.fence / fence.proxy.async: ordering only; the twins' deferred execution needs none.
__device__ __forceinline__ void wgmma_fence() {}
__device__ __forceinline__ void fence_proxy_async_shared() {}
// The compiler-ordering pin of the accumulators: nothing to order on the CPU.
template <int N>
__device__ __forceinline__ void wgmma_fence_operands(float (&)[N]) {}
__device__ __forceinline__ void wgmma_commit() { emu::wgmma_commit(); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
    emu::wgmma_wait(N);
}

// Element (mn, k) of a wgmma operand in shared memory, read through its matrix descriptor (PTX ISA,
// "Asynchronous Warpgroup Level Matrix Shared Memory Layout": matrix descriptor format and the
// canonical layouts without swizzling, T = 8 bf16 per 16 bytes):
//   K-major  ((8,m),(T,2k)) : ((1T,SBO),(1,LBO))  ->  bytes 16 (mn%8) + SBO (mn/8) + 2 (k%8) + LBO (k/8)
//   MN-major ((T,1,m),(8,k)) : ((1,T,SBO),(1T,LBO)) -> bytes 2 (mn%8) + SBO (mn/8) + 16 (k%8) + LBO (k/8)
// Descriptor: bits 0-13 start address >> 4, 16-29 LBO >> 4, 32-45 SBO >> 4, 62-63 swizzle mode.
inline float wgmma_operand(unsigned long long desc, bool mn_major, int mn, int k) {
    if ((desc >> 62) != 0) emu::fail("wgmma twin: only the no-swizzle layout is emulated");
    const size_t start = (size_t)(desc & 0x3fff) << 4, lbo = (size_t)((desc >> 16) & 0x3fff) << 4;
    const size_t sbo = (size_t)((desc >> 32) & 0x3fff) << 4;
    const size_t off = mn_major ? 2 * (mn % 8) + sbo * (mn / 8) + 16 * (k % 8) + lbo * (k / 8)
                                : 16 * (mn % 8) + sbo * (mn / 8) + 2 * (k % 8) + lbo * (k / 8);
    if (start + off + 2 > emu::dyn_smem_bytes()) emu::fail("wgmma twin: an operand element past dynamic shared memory");
    unsigned short bits;
    std::memcpy(&bits, static_cast<const unsigned char*>(emu::dyn_smem()) + start + off, 2);
    return __uint_as_float((unsigned)bits << 16);
}

// wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 d, a-desc, b-desc, 1, 1, 1, tA, tB
// (D += A B with A 64x16 and B 16x128 from shared memory; A MN-major when kTransA, B when kTransB).
// Accumulator fragment ("Matrix Fragments for wgmma.m64nNk16", D): thread t of the warpgroup holds
// d[4j + 2h + e] = D[16 (t/32) + (t%32)/4 + 8h][8j + 2 (t%4) + e]. Each thread's elements depend
// only on its own accumulators and the operands, so each thread's share is computed on its own: in
// seeded runs at its own warp's wgmma_wait that retires the group (shared memory changed before
// that wait is what it reads, as it may be on hardware), in plain runs once the whole warpgroup has
// committed it (runtime.cpp).
template <int kTransA, int kTransB>
__device__ __forceinline__ void wgmma_m64n128k16_bf16(float d[64], unsigned long long desc_a, unsigned long long desc_b) {
    const unsigned t = (threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % 128;
    emu::wgmma_issue([d, desc_a, desc_b, t]() {
        for (int v = 0; v < 64; ++v) {
            const int row = 16 * (int)(t / 32) + (int)(t % 32) / 4 + 8 * ((v >> 1) & 1);
            const int col = 8 * (v >> 2) + 2 * (int)(t % 4) + (v & 1);
            float acc = d[v];
            for (int k = 0; k < 16; ++k) acc += wgmma_operand(desc_a, kTransA, row, k) * wgmma_operand(desc_b, kTransB, col, k);
            d[v] = acc;
        }
    });
}

}  // namespace automoe
