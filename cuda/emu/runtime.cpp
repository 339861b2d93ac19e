// The emulator's scheduler: each CUDA thread of a block is a ucontext fiber with its own stack; the
// fibers of a block run on the launching OS thread and switch only at barriers, so a block costs a
// few context switches per barrier rather than an OS thread per CUDA thread (TOOLCHAIN.md measured
// ~18 ms per 256-thread block for the latter). Stacks are kept per OS thread and reused.
#include <ucontext.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

// After the standard headers: emu.h defines macros (__shared__, __device__) they must not see.
#include "ptx.h"  // declares the twins' runtime half (and includes emu.h)

namespace emu {
namespace {

constexpr size_t kStackBytes = 64 * 1024;

struct Barrier {
    unsigned expected = 0;  // live (not exited) threads that must arrive
    unsigned arrived = 0;
    unsigned gen = 0;  // bumped on every release; waiters compare against the value they saw
};

enum class State { Runnable, Waiting, Done };

struct AsyncCopy {
    void* dst;
    const void* src;
    unsigned bytes, src_bytes;
};

// One lane's cp.async into dynamic shared memory, for the bank accounting: the lane's seq-th copy
// since block barrier generation gen (the lanes of a warp executing one cp.async instruction share
// gen and seq), at byte offset off.
struct CpRecord {
    unsigned gen, seq, lane;
    uint32_t off;
};

struct Fiber {
    ucontext_t ctx;
    std::vector<AsyncCopy> open_copies;               // cp.async issued, not yet committed
    std::deque<std::vector<AsyncCopy>> copy_groups;  // committed, oldest first
    std::vector<std::function<void()>> open_mmas;               // wgmma issued, not yet committed
    std::deque<std::vector<std::function<void()>>> mma_groups;  // committed, not yet performed
    unsigned mma_committed = 0;  // groups committed so far; the oldest (committed - queued) are done
    unsigned cp_gen = 0, cp_seq = 0;  // block barrier generation of the last cp.async, copies since
    bool spun = false;  // yielded in a wait without doing anything (not progress)
    uint3 tid;
    State state = State::Runnable;
    Barrier* wait_bar = nullptr;
    unsigned wait_gen = 0;
};

struct Warp {
    Barrier bar;
    unsigned exists = 0;  // bit i set when lane i is part of the block
    unsigned live = 0;    // bit i set while lane i exists and has not exited
    uint64_t buf[32];
    unsigned char gather[32 * 64];  // warp_gather's exchange area
    std::vector<CpRecord> cp_log;   // this block's cp.async writes, accounted at the block's end
};

struct Sched {
    ucontext_t main_ctx;
    std::vector<Fiber> fibers;
    std::vector<std::unique_ptr<char[]>> stacks;
    std::vector<Warp> warps;
    std::vector<unsigned> order;
    Barrier block_bar;
    std::vector<unsigned char> smem;  // dynamic shared memory, 16-byte aligned start
    unsigned cur = 0;
    void (*body)(const void*) = nullptr;
    const void* arg = nullptr;
    std::string error;
    uint64_t rng = 0;
    SmemStats stats{};
};

thread_local Sched* t_sched = nullptr;
thread_local std::string t_last_error;
thread_local SmemStats t_last_stats{};

Sched& sched() { return *t_sched; }

unsigned next_rand(Sched& s) {
    // xorshift64*: enough to vary the interleaving between barriers reproducibly.
    s.rng ^= s.rng >> 12;
    s.rng ^= s.rng << 25;
    s.rng ^= s.rng >> 27;
    return (unsigned)((s.rng * 2685821657736338717ull) >> 32);
}

void yield_to_main() {
    Sched& s = sched();
    swapcontext(&s.fibers[s.cur].ctx, &s.main_ctx);
}

void release(Barrier& b) {
    b.arrived = 0;
    b.gen++;
}

void arrive(Barrier& b) {
    Sched& s = sched();
    b.arrived++;
    if (b.arrived >= b.expected) {
        release(b);
        return;
    }
    Fiber& f = s.fibers[s.cur];
    f.state = State::Waiting;
    f.wait_bar = &b;
    f.wait_gen = b.gen;
    yield_to_main();
}

unsigned linear_tid() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }

void fiber_entry() {
    Sched& s = sched();
    s.body(s.arg);
    // Thread exit: exited threads no longer count towards barriers (as on current hardware).
    unsigned lt = linear_tid();
    Warp& w = s.warps[lt / 32];
    if (w.bar.arrived > 0) {
        fail("divergent warp: a lane exited while other lanes of its warp wait in a warp intrinsic "
             "(__shfl*/__ballot/__syncwarp must be reached by every live lane)");
    }
    w.live &= ~(1u << (lt % 32));
    w.bar.expected--;
    if (w.bar.arrived > 0 && w.bar.arrived >= w.bar.expected) release(w.bar);
    s.block_bar.expected--;
    if (s.block_bar.arrived > 0 && s.block_bar.arrived >= s.block_bar.expected) release(s.block_bar);
    s.fibers[s.cur].state = State::Done;
    yield_to_main();
    // Never resumed.
}

void check_mask(unsigned mask) {
    Sched& s = sched();
    unsigned lt = linear_tid();
    const Warp& w = s.warps[lt / 32];
    if (mask & w.exists & ~w.live) fail("warp intrinsic whose mask names lanes that have exited");
    if ((mask & w.live) != w.live) {
        fail("warp intrinsic with a mask that leaves out live lanes: the emulator supports only "
             "whole-warp (convergent) warp intrinsics");
    }
}

void shuffle_order(Sched& s) {
    for (size_t i = s.order.size(); i > 1; --i) {
        size_t j = next_rand(s) % i;
        std::swap(s.order[i - 1], s.order[j]);
    }
}

// ---- Bank accounting (docs/EMULATOR.md, "Bank conflicts") ----
// Shared memory has 32 banks of 4 bytes. A warp's 16-byte accesses are served in phases of 8 lanes;
// a lane's 16 bytes occupy the four banks of one quad (byte offset / 16 mod 8). Lanes of one phase
// that touch different 16-byte slots of the same quad conflict: the phase takes as many wavefronts
// as its busiest quad has distinct slots (lanes touching the same slot share one wavefront).
// Offsets are taken from the start of dynamic shared memory, which is where a kernel without static
// shared memory has it on the device (the bf16 grouped GEMMs: docs/BENCHMARKS.md, ptxas).
unsigned phase_wavefronts(const uint32_t* offs, unsigned n) {
    uint32_t slots[8][8];
    unsigned count[8] = {}, worst = 0;
    for (unsigned i = 0; i < n; ++i) {
        const uint32_t slot = offs[i] / 16, q = slot % 8;
        if (std::find(slots[q], slots[q] + count[q], slot) == slots[q] + count[q]) slots[q][count[q]++] = slot;
        worst = std::max(worst, count[q]);
    }
    return worst;
}

// Byte offset of p in dynamic shared memory; false if p lies outside it.
bool dyn_smem_offset(const Sched& s, const void* p, uint32_t* off) {
    const unsigned char* base = s.smem.data();
    const unsigned char* q = static_cast<const unsigned char*>(p);
    if (s.smem.empty() || q < base || q + 16 > base + s.smem.size()) return false;
    *off = (uint32_t)(q - base);
    return true;
}

// The block's cp.async writes, grouped into instructions (gen, seq) of each warp and into phases of
// 8 lanes within them.
void account_cp_async(Sched& s) {
    for (Warp& w : s.warps) {
        std::sort(w.cp_log.begin(), w.cp_log.end(), [](const CpRecord& a, const CpRecord& b) {
            return std::tie(a.gen, a.seq, a.lane) < std::tie(b.gen, b.seq, b.lane);
        });
        for (size_t i = 0; i < w.cp_log.size();) {
            const CpRecord& first = w.cp_log[i];
            uint32_t offs[8];
            unsigned n = 0;
            for (; i < w.cp_log.size() && w.cp_log[i].gen == first.gen && w.cp_log[i].seq == first.seq &&
                   w.cp_log[i].lane / 8 == first.lane / 8;
                 ++i)
                offs[n++] = w.cp_log[i].off;
            s.stats.cp_async_phases++;
            s.stats.cp_async_wavefronts += phase_wavefronts(offs, n);
        }
        w.cp_log.clear();
    }
}

// Runs one block to completion (or to the first error). Returns false on error.
bool run_block(Sched& s, unsigned nthreads) {
    const dim3 bd = blockDim;
    s.fibers.assign(nthreads, Fiber{});
    unsigned nwarps = (nthreads + 31) / 32;
    s.warps.assign(nwarps, Warp{});
    for (unsigned w = 0; w < nwarps; ++w) {
        unsigned lanes = std::min(32u, nthreads - w * 32);
        s.warps[w].exists = s.warps[w].live = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
        s.warps[w].bar.expected = lanes;
    }
    s.block_bar = Barrier{};
    s.block_bar.expected = nthreads;
    while (s.stacks.size() < nthreads) s.stacks.emplace_back(new char[kStackBytes]);
    // Poison dynamic shared memory so a kernel reading what it never wrote sees NaN/garbage.
    std::memset(s.smem.data(), 0xff, s.smem.size());
    s.order.resize(nthreads);
    for (unsigned i = 0; i < nthreads; ++i) {
        Fiber& f = s.fibers[i];
        f.tid = {i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y)};
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = s.stacks[i].get();
        f.ctx.uc_stack.ss_size = kStackBytes;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, fiber_entry, 0);
        s.order[i] = i;
    }
    // Shuffled runs also hold one warp back, the laggard, drawn again after every block-wide
    // barrier: it runs only in passes where no other thread can, so every other warp gets as far
    // ahead of it as the kernel's barriers allow. Without it warps advance in near lockstep (one
    // warp intrinsic per pass), which hides a missing barrier between one warp's last reads of
    // shared memory and another warp's next writes (e.g. a pipelined loop refilling a buffer).
    const unsigned no_laggard = ~0u;
    unsigned laggard = s.rng != 0 && nwarps > 1 ? next_rand(s) % nwarps : no_laggard;
    unsigned bar_gen = s.block_bar.gen;
    unsigned done = 0;
    while (done < nthreads) {
        if (s.rng != 0) shuffle_order(s);
        if (laggard != no_laggard && s.block_bar.gen != bar_gen) {
            bar_gen = s.block_bar.gen;
            laggard = next_rand(s) % nwarps;
        }
        bool progressed = false;
        for (int round = 0; round < 2 && !progressed; ++round) {
            for (unsigned i : s.order) {
                if (round == 0 && i / 32 == laggard) continue;
                Fiber& f = s.fibers[i];
                if (f.state == State::Waiting && f.wait_bar->gen != f.wait_gen) f.state = State::Runnable;
                if (f.state != State::Runnable) continue;
                s.cur = i;
                threadIdx = f.tid;
                swapcontext(&s.main_ctx, &f.ctx);
                if (!s.error.empty()) return false;
                if (f.state == State::Done) done++;
                if (!f.spun) progressed = true;
                f.spun = false;
            }
            if (laggard == no_laggard) break;
        }
        if (!progressed) {
            s.error = "deadlock: every remaining thread waits at a barrier that can never complete "
                      "(a __syncthreads or warp intrinsic not reached by all live threads)";
            return false;
        }
    }
    account_cp_async(s);
    return true;
}

}  // namespace

void syncthreads() { arrive(sched().block_bar); }

void syncwarp(unsigned mask) {
    check_mask(mask);
    arrive(sched().warps[linear_tid() / 32].bar);
}

unsigned lane_id() { return linear_tid() % 32; }

uint64_t warp_exchange(unsigned mask, uint64_t mine, int src) {
    check_mask(mask);
    Sched& s = sched();
    unsigned lt = linear_tid();
    Warp& w = s.warps[lt / 32];
    w.buf[lt % 32] = mine;
    arrive(w.bar);  // everyone has published
    uint64_t v = (src >= 0 && src < 32 && ((w.live >> src) & 1u)) ? w.buf[src] : mine;
    arrive(w.bar);  // everyone has read, so the buffer may be reused
    return v;
}

unsigned warp_ballot(unsigned mask, int pred) {
    check_mask(mask);
    Sched& s = sched();
    unsigned lt = linear_tid();
    Warp& w = s.warps[lt / 32];
    w.buf[lt % 32] = pred != 0;
    arrive(w.bar);
    unsigned r = 0;
    for (unsigned l = 0; l < 32; ++l)
        if (((w.live & mask) >> l) & 1u) r |= (w.buf[l] ? 1u : 0u) << l;
    arrive(w.bar);
    return r;
}

void warp_gather(const void* mine, unsigned bytes, void* all) {
    if (bytes > 64) fail("warp_gather: more than 64 bytes per lane");
    check_mask(0xffffffffu);
    Sched& s = sched();
    unsigned lt = linear_tid();
    Warp& w = s.warps[lt / 32];
    std::memcpy(w.gather + (lt % 32) * bytes, mine, bytes);
    arrive(w.bar);
    std::memcpy(all, w.gather, 32 * bytes);  // lanes that do not exist leave stale bytes: never read
    arrive(w.bar);
}

static void perform(const AsyncCopy& c) {
    std::memcpy(c.dst, c.src, c.src_bytes);
    std::memset(static_cast<unsigned char*>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);
}

// Asynchronous operations complete at a time the program cannot rely on, anywhere between issue and
// the wait that guarantees them; the twins take the two ends, one per mode, so that both kinds of
// race show: seeded runs copy at the issue (early: a copy into a buffer still being read by an
// operation that completes late corrupts it) and run wgmma at the wait (late); plain runs copy at
// the wait (late: reading before the wait sees poison) and run wgmma as soon as every thread of the
// warpgroup has committed its group (early).
void cp_async(void* dst, const void* src, unsigned bytes, unsigned src_bytes) {
    Sched& s = sched();
    // The instruction faults on a misaligned address (PTX ISA, cp.async: both addresses aligned to
    // the copy size); x86 would not, so the twin checks. A source no byte is read from is exempt.
    if ((uintptr_t)dst % bytes != 0) fail("cp.async: shared-memory destination not aligned to the copy size");
    if (src_bytes > 0 && (uintptr_t)src % bytes != 0) fail("cp.async: global source not aligned to the copy size");
    const AsyncCopy c{dst, src, bytes, src_bytes < bytes ? src_bytes : bytes};
    uint32_t off;
    if (!dyn_smem_offset(s, dst, &off)) {
        s.stats.untracked++;
    } else {
        Fiber& f = s.fibers[s.cur];
        if (f.cp_gen != s.block_bar.gen) f.cp_gen = s.block_bar.gen, f.cp_seq = 0;
        s.warps[s.cur / 32].cp_log.push_back(CpRecord{f.cp_gen, f.cp_seq++, s.cur % 32, off});
    }
    if (s.rng != 0)
        perform(c);
    else
        s.fibers[s.cur].open_copies.push_back(c);
}

void cp_async_commit() {
    Fiber& f = sched().fibers[sched().cur];
    f.copy_groups.push_back(std::move(f.open_copies));
    f.open_copies.clear();
}

void cp_async_wait(int n) {
    Fiber& f = sched().fibers[sched().cur];
    while (f.copy_groups.size() > (size_t)(n < 0 ? 0 : n)) {
        for (const AsyncCopy& c : f.copy_groups.front()) perform(c);
        f.copy_groups.pop_front();
    }
}

void wgmma_issue(std::function<void()> op) { sched().fibers[sched().cur].open_mmas.push_back(std::move(op)); }

// The fibers of the calling thread's warpgroup: [first, last).
static std::pair<size_t, size_t> warpgroup(const Sched& s) {
    const size_t first = (size_t)(s.cur / 128) * 128;
    return {first, std::min(first + 128, s.fibers.size())};
}

// Performs the shares of the threads [first, last) in the groups before index `retire` (each thread
// of the warpgroup has committed them).
static void retire_mmas(Sched& s, size_t first, size_t last, unsigned retire) {
    for (size_t i = first; i < last; ++i) {
        Fiber& f = s.fibers[i];
        while (f.mma_committed - f.mma_groups.size() < retire) {
            for (const auto& op : f.mma_groups.front()) op();
            f.mma_groups.pop_front();
        }
    }
}

// Whether every thread of the warpgroup has committed `groups` groups; fails if one exited first.
static bool all_committed(const Sched& s, unsigned groups) {
    const auto [first, last] = warpgroup(s);
    bool all = true;
    for (size_t i = first; i < last; ++i) {
        const Fiber& f = s.fibers[i];
        if (f.mma_committed >= groups) continue;
        if (f.state == State::Done) fail("wgmma: a thread of the warpgroup exited without issuing a group the others did");
        all = false;
    }
    return all;
}

void wgmma_commit() {
    Sched& s = sched();
    Fiber& f = s.fibers[s.cur];
    f.mma_groups.push_back(std::move(f.open_mmas));
    f.open_mmas.clear();
    f.mma_committed++;
    if (s.rng == 0 && all_committed(s, f.mma_committed)) {  // early: every thread's share
        const auto [first, last] = warpgroup(s);
        retire_mmas(s, first, last, f.mma_committed);
    }
}

// A wait that retires group g first waits (yielding to the other fibers) until every thread of the
// warpgroup has committed group g, as the hardware cannot finish an operation some warp has not
// issued; then it performs the shares of its own warp's threads in the groups up to g, and only
// those: the PTX ISA promises a thread the completion of the groups it committed, and the warps of
// a warpgroup run their parts of a wgmma on their own SM quadrants. So until every warp has waited
// (a barrier after the waits), another warp's part may still read the operands: a buffer refilled
// after one warp's wait and no barrier corrupts the late warps' results here (seeded runs, which
// perform cp.async at the issue), as it may on hardware.
void wgmma_wait(int n) {
    Sched& s = sched();
    const unsigned mine = s.fibers[s.cur].mma_committed, keep = (unsigned)(n < 0 ? 0 : n);
    const unsigned retire = mine > keep ? mine - keep : 0;
    while (!all_committed(s, retire)) {
        // Still runnable, resumed in the scheduler's next round; a round in which every thread
        // only spun here is no progress (a deadlock, or the laggard's turn).
        s.fibers[s.cur].spun = true;
        yield_to_main();
    }
    const size_t warp_first = (size_t)(s.cur / 32) * 32;
    retire_mmas(s, warp_first, std::min(warp_first + 32, s.fibers.size()), retire);
}

void check_ldmatrix_rows(const void* const rows[32]) {
    Sched& s = sched();
    for (int l = 0; l < 32; ++l)
        if ((uintptr_t)rows[l] % 16 != 0) fail("ldmatrix: a row address not 16-byte aligned");
    for (int m = 0; m < 4; ++m) {
        uint32_t offs[8];
        bool tracked = true;
        for (int j = 0; j < 8; ++j) tracked = tracked && dyn_smem_offset(s, rows[8 * m + j], &offs[j]);
        if (!tracked) {
            s.stats.untracked++;
            continue;
        }
        s.stats.ldmatrix_phases++;
        s.stats.ldmatrix_wavefronts += phase_wavefronts(offs, 8);
    }
}

void* dyn_smem() { return sched().smem.data(); }

size_t dyn_smem_bytes() { return sched().smem.size(); }

void fail(const char* msg) {
    Sched& s = sched();
    s.error = msg;
    swapcontext(&s.fibers[s.cur].ctx, &s.main_ctx);
    __builtin_unreachable();
}

int launch(const LaunchCfg* cfg, void (*body)(const void*), const void* arg) {
    t_last_error.clear();
    const uint64_t nthreads = (uint64_t)cfg->block[0] * cfg->block[1] * cfg->block[2];
    if (nthreads == 0 || nthreads > 1024 || cfg->grid[0] == 0 || cfg->grid[1] == 0 || cfg->grid[2] == 0 ||
        cfg->grid[1] > 65535 || cfg->grid[2] > 65535) {
        t_last_error = "invalid launch configuration: grid " + std::to_string(cfg->grid[0]) + "x" +
                       std::to_string(cfg->grid[1]) + "x" + std::to_string(cfg->grid[2]) + ", block " +
                       std::to_string(cfg->block[0]) + "x" + std::to_string(cfg->block[1]) + "x" +
                       std::to_string(cfg->block[2]) + " (at most 1024 threads per block)";
        return 1;
    }
    if (cfg->smem_bytes > 227 * 1024) {
        t_last_error = "dynamic shared memory of " + std::to_string(cfg->smem_bytes) + " bytes exceeds 227 KiB";
        return 1;
    }
    if (t_sched != nullptr) {
        t_last_error = "nested emulator launch (a kernel cannot launch kernels)";
        return 1;
    }
    thread_local Sched s;  // keeps the stacks across launches on this OS thread
    t_sched = &s;
    s.error.clear();
    s.stats = SmemStats{};
    s.body = body;
    s.arg = arg;
    s.rng = cfg->seed == 0 ? 0 : (0x9E3779B97F4A7C15ull ^ cfg->seed);
    s.smem.assign(cfg->smem_bytes, 0);
    blockDim = {cfg->block[0], cfg->block[1], cfg->block[2]};
    gridDim = {cfg->grid[0], cfg->grid[1], cfg->grid[2]};
    bool ok = true;
    for (unsigned z = 0; ok && z < cfg->grid[2]; ++z)
        for (unsigned y = 0; ok && y < cfg->grid[1]; ++y)
            for (unsigned x = 0; ok && x < cfg->grid[0]; ++x) {
                blockIdx = {x, y, z};
                ok = run_block(s, (unsigned)nthreads);
            }
    t_sched = nullptr;
    t_last_stats = s.stats;
    if (!ok) {
        t_last_error = "block (" + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
                       std::to_string(blockIdx.z) + "): " + s.error;
        return 2;
    }
    return 0;
}

}  // namespace emu

// Message of the last failed launch on this OS thread ("" if none); valid until the next launch.
extern "C" const char* emu_last_error() { return emu::t_last_error.c_str(); }

// Bank accounting of the last launch on this OS thread (zeros before the first).
extern "C" void emu_last_smem_stats(emu::SmemStats* out) { *out = emu::t_last_stats; }
