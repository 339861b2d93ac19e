#!/usr/bin/env bash
# CUDA checks that need no GPU: (1) NVRTC 13.0 from PyPI into .venv-nvrtc, (2) src/cuda/abi.rs
# regenerated from cuda/abi.h and diffed, (3) every kernel compiled by NVRTC for sm_80 and sm_90a
# through the runtime's own compile path, warnings counting as failures. The emulator tests
# (tests/moe_kernels.rs, src/cuda/emu_tests.rs) run in the ordinary `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/nvrtc-venv.sh)"
scripts/gen-abi.sh --check
AUTOMOE_REQUIRE_NVRTC=1 cargo test --release -j "${CARGO_JOBS:-1}" --test nvrtc_compile -- --nocapture
echo "ci-cuda-checks: all passed"
