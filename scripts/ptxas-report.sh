#!/usr/bin/env bash
# Registers, shared memory and spills of every kernel, as ptxas reports them (`ptxas -v`), for
# sm_80 and sm_90a, printed as a Markdown table (docs/BENCHMARKS.md, "ptxas"). Needs no GPU: nvcc
# and ptxas come from the nvidia-cuda-nvcc wheel (TOOLCHAIN.md), installed into a scratch venv
# outside the repository; nvcc uses the host gcc.
#   scripts/ptxas-report.sh [venv-dir]     (default: ${TMPDIR:-/tmp}/automoe-ptxas-venv)
# Exits nonzero if any kernel spills.
set -euo pipefail
cd "$(dirname "$0")/.."
V="${1:-${TMPDIR:-/tmp}/automoe-ptxas-venv}"
if [ ! -x "$V/bin/python3" ]; then
    python3 -m venv "$V"
fi
"$V/bin/pip" install --quiet --disable-pip-version-check nvidia-cuda-nvcc==13.5.37 nvidia-cuda-cccl nvidia-cuda-runtime
N="$(ls -d "$V"/lib/python3*/site-packages/nvidia/cu13 | head -n 1)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
echo "| kernel | arch | registers | shared memory (bytes) | spill stores / loads (bytes) |"
echo "| --- | --- | ---: | ---: | --- |"
spills=0
for arch in sm_80 sm_90a; do
    for f in cuda/*.cu; do
        # The exact command (also in docs/BENCHMARKS.md):
        "$N/bin/nvcc" -cubin -arch="$arch" -std=c++17 -Xptxas -v -Icuda -o "$out/k.cubin" "$f" 2>"$out/log"
        awk -v arch="$arch" '
            /Compiling entry function/ { match($0, /'\''[^'\'']+'\''/); k = substr($0, RSTART + 1, RLENGTH - 2) }
            /spill stores/ { st = $5; ld = $9 }
            /Used [0-9]+ registers/ {
                match($0, /Used [0-9]+ registers/); r = substr($0, RSTART + 5, RLENGTH - 15)
                s = 0; if (match($0, /[0-9]+ bytes smem/)) s = substr($0, RSTART, RLENGTH - 11)
                printf "| `%s` | %s | %s | %s | %s / %s |\n", k, arch, r, s, st, ld
            }' "$out/log" | sort
        if grep -E "spill stores" "$out/log" | grep -vq " 0 bytes spill stores, 0 bytes spill loads"; then spills=1; fi
    done
done
[ $spills -eq 0 ] || { echo "ptxas-report: some kernel spills" >&2; exit 1; }
