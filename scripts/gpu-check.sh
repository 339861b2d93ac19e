#!/usr/bin/env bash
# One command for a machine with a CUDA GPU (driver, NVRTC and cuBLAS 13) and cargo: builds every
# CUDA test binary and benchmark (scripts/gpu-bundle.sh), then runs them (scripts/gpu-bundle-run.sh):
# the device tests of the routing kernels, PTX helpers, grouped GEMMs, the CUDA MoE layer, every
# tape op and the MoE tape ops on cuda:0 against the CPU, the kernel launchers' unit tests, supernet training and translation against
# the CPU, then the routing kernels' bandwidth benchmark, the grouped GEMM
# throughput benchmark and the end-to-end benchmark (training tokens/s in f32 and mixed precision,
# translation latency), and prints a short table. Budget: under 8 minutes.
# The list of tests and benchmarks lives in those two scripts only, so that a GPU machine without
# a Rust toolchain (the lent H200) runs exactly the same check from a bundle built elsewhere.
# The device machine has no internet: run it from a checkout whose dependencies are already in the
# cargo registry (or vendored), hence offline.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_NET_OFFLINE=true
start=$(date +%s)
timeout 300 scripts/gpu-bundle.sh >/dev/null
printf '%-40s %s\n' "build" "ok ($(( $(date +%s) - start )) s)"
exec bash scripts/gpu-bundle-run.sh "$@"
