#!/usr/bin/env bash
# One command for a machine with a CUDA GPU (driver + NVRTC 13): builds, runs the kernels' device
# tests (routing kernels: tests/moe_kernels.rs module `cuda`; PTX helpers: tests/ptx_helpers.rs;
# grouped GEMMs: tests/grouped_gemm.rs module `cuda`; the MoE layer end to end:
# tests/moe_layer_cuda.rs; every tape op and the MoE tape ops on cuda:0 against the CPU:
# tests/cuda_tape_ops.rs, tests/cuda_moe_tape.rs; supernet training on the device against the CPU:
# tests/cuda_moe_model.rs, tests/cuda_training.rs), the NVRTC compile test, the routing kernels' bandwidth/latency benchmark,
# the grouped GEMM throughput benchmark (cuBLAS from the CUDA install) and the end-to-end benchmark
# (training tokens/s in f32 and mixed precision, translation latency), then prints a short summary.
# Budget: under 8 minutes.
# The device machine has no internet: run it from a checkout whose dependencies are already in the
# cargo registry (or vendored), hence --offline.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_NET_OFFLINE=true
log="$(mktemp -d)"
start=$(date +%s)
step() { printf '%-34s %s\n' "$1" "$2"; }

timeout 300 cargo build --release --offline --tests --benches >"$log/build" 2>&1 || { tail -30 "$log/build"; exit 1; }
step "build" "ok ($(( $(date +%s) - start )) s)"

# The CUDA tests print "skipped on cuda" when no device is usable: that is a failure here.
status=0
timeout 150 cargo test --release --offline --test moe_kernels --test ptx_helpers --test grouped_gemm --test moe_layer_cuda \
    -- cuda --nocapture >"$log/tests" 2>&1 || status=$?
# These run every backend present in each test (the emulator and cuda:0); a missing device would
# silently test only the emulator, so the script checks for one first.
cargo run --release --offline --quiet -- devices 2>&1 | grep -q "cuda:0" || { echo "no cuda:0 visible to automoe devices"; exit 1; }
timeout 200 cargo test --release --offline --test cuda_tape_ops --test cuda_moe_tape --test cuda_moe_model --test cuda_training \
    >>"$log/tests" 2>&1 || status=$?
if grep -q "skipped on cuda" "$log/tests"; then
    grep -m1 "skipped on cuda" "$log/tests"; exit 1
fi
# One summary line per test binary, named by the "Running tests/<name>.rs" line before it.
awk '/Running tests\//{ match($0, /tests\/[a-z_0-9]+/); t = substr($0, RSTART + 6, RLENGTH - 6) }
     /^test result/{ printf "%-34s %s\n", "device tests (" t ")", $0 }' "$log/tests"
[ $status -eq 0 ] || { grep -E "panicked|FAILED|Error" "$log/tests" | head -20; exit $status; }

AUTOMOE_REQUIRE_NVRTC=1 timeout 60 cargo test --release --offline --test nvrtc_compile >"$log/nvrtc" 2>&1 || { tail -30 "$log/nvrtc"; exit 1; }
step "nvrtc compile (sm_80, sm_90a)" "ok"

timeout 120 cargo bench --offline --bench cuda_moe_kernels 2>&1 | tee "$log/bench" | grep -v -E "^\s*(Compiling|Finished|Running)"
timeout 150 cargo bench --offline --bench cuda_grouped_gemm 2>&1 | tee "$log/bench-gemm" | grep -v -E "^\s*(Compiling|Finished|Running)"
AUTOMOE_BENCH_UPDATES=10 timeout 120 cargo bench --offline --bench cuda_train_translate 2>&1 | tee "$log/bench-e2e" | grep -v -E "^\s*(Compiling|Finished|Running)"
step "total" "$(( $(date +%s) - start )) s"
