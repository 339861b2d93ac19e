#!/usr/bin/env bash
# The GPU check for a device machine without a Rust toolchain (the lent H200 has CUDA 13, NVRTC and
# cuBLAS but no cargo and no internet): builds here, in release, every test binary and benchmark
# that scripts/gpu-check.sh runs, strips and packs them into .gpu-bundle/ (git-ignored, ~40 MB)
# with a runner, scripts/gpu-bundle-run.sh. On the device, from the repository root:
#   bash scripts/gpu-bundle-run.sh          (or the device tool: carry [".gpu-bundle"])
# It prints the same table as scripts/gpu-check.sh and writes the full log to $OUT/log if set.
set -euo pipefail
cd "$(dirname "$0")/.."
tests=(moe_kernels ptx_helpers grouped_gemm moe_layer_cuda cuda_tape_ops cuda_kernels_many_blocks cuda_moe_tape cuda_moe_model cuda_training pipeline)
benches=(cuda_moe_kernels cuda_grouped_gemm cuda_train_translate)
# --lib: the crate's unit tests, of which the bundle runs the kernel launchers' (cuda::ops::*, on
# every backend present, so on cuda:0 against the CPU kernels).
args=(--lib)
for t in "${tests[@]}"; do args+=(--test "$t"); done
for b in "${benches[@]}"; do args+=(--bench "$b"); done
json="$(mktemp)"
trap 'rm -f "$json"' EXIT
cargo test --release --no-run --message-format=json "${args[@]}" >"$json"
cargo build --release --bin automoe
rm -rf .gpu-bundle && mkdir -p .gpu-bundle/bin
# The executables of the test and bench targets, named by target.
python3 - "$json" <<'PY'
import json, shutil, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"][0] in ("test", "bench"):
        shutil.copy(m["executable"], ".gpu-bundle/bin/" + m["target"]["name"])
    elif m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"] and "rlib" in m["target"]["kind"]:
        shutil.copy(m["executable"], ".gpu-bundle/bin/automoe_lib")  # not "automoe": the CLI's name
PY
cp target/release/automoe .gpu-bundle/bin/automoe
strip .gpu-bundle/bin/*
tar -C .gpu-bundle -czf .gpu-bundle/bin.tar.gz bin && rm -rf .gpu-bundle/bin
du -sh .gpu-bundle
