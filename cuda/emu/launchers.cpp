// One translation unit holding every kernel, compiled by build.rs as host C++20 against the
// emulation header, plus a C launcher per kernel: emu_launch_<kernel>(cfg, params) -> status.
#define AUTOMOE_EMU 1
#include "emu.h"

#include "../gating.cu"
#include "../permute.cu"
#include "../grouped_gemm.cu"
#include "../grouped_gemm_variants.cu"
#include "../elementwise.cu"
#include "../reduce.cu"
#include "../norm.cu"
#include "../softmax.cu"
#include "../loss.cu"
#include "../embedding.cu"
#include "../optim.cu"
#include "../decode.cu"
#include "../ptx_selftest.cu"
#include "tests.cu"

#define EMU_KERNEL(name, Params)                                                                      \
    extern "C" int emu_launch_##name(const emu::LaunchCfg* cfg, const Params* p) {                  \
        return emu::launch(cfg, [](const void* a) { name(*static_cast<const Params*>(a)); }, p); \
    }
#include "kernels.def"
