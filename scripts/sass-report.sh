#!/usr/bin/env bash
# Static SASS instruction counts of the grouped GEMMs (sm_90a), as quoted in docs/BENCHMARKS.md
# ("Epilogue", "wgmma descriptors"): for each wgmma entry point the instructions of one k-tile from
# the proxy fence to the wgmma wait, and for the main bf16/f32 entry points the size of each
# epilogue fast-path variant. Needs no GPU: nvcc and cuobjdump come from PyPI wheels, installed into
# the scratch venv of scripts/ptxas-report.sh.
#   scripts/sass-report.sh [venv-dir]     (default: ${TMPDIR:-/tmp}/automoe-ptxas-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
V="${1:-${TMPDIR:-/tmp}/automoe-ptxas-venv}"
if [ ! -x "$V/bin/python3" ]; then
    python3 -m venv "$V"
fi
"$V/bin/pip" install --quiet --disable-pip-version-check nvidia-cuda-nvcc==13.5.37 nvidia-cuda-cccl nvidia-cuda-runtime nvidia-cuda-cuobjdump
N="$(ls -d "$V"/lib/python3*/site-packages/nvidia/cu13 | head -n 1)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for f in grouped_gemm grouped_gemm_variants; do
    "$N/bin/nvcc" -cubin -arch=sm_90a -std=c++17 -Icuda -o "$out/$f.cubin" "cuda/$f.cu"
    "$N/bin/cuobjdump" -sass "$out/$f.cubin" > "$out/$f.sass"
done
python3 - "$out/grouped_gemm.sass" "$out/grouped_gemm_variants.sass" <<'PY'
import re, sys

def functions(path):
    funcs, cur = {}, None
    for line in open(path):
        m = re.search(r'Function : (\S+)', line)
        if m:
            cur = funcs.setdefault(m.group(1), [])
            continue
        m = re.match(r'\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;', line)
        if m and cur is not None:
            cur.append((int(m.group(1), 16), m.group(2)))
    return funcs

funcs = {}
for p in sys.argv[1:]:
    funcs.update(functions(p))

print("wgmma k-tile, proxy fence to wgmma wait (instructions, of them R2UR):")
for name in sorted(k for k in funcs if '_sm90' in k):
    ins = [i for _, i in funcs[name]]
    a = next(n for n, i in enumerate(ins) if 'FENCE.VIEW.ASYNC.S' in i)
    b = next(n for n, i in enumerate(ins) if n > a and 'WARPGROUP.DEPBAR.LE gsb0, 0x1' in i)
    print(f"  {name:36} {b - a + 1:5} {sum('R2UR' in i for i in ins[a:b + 1]):4}")

# The epilogue's fast variants are the far-forward targets of the per-tile dispatch; each runs to
# the next (the per-pair fallback, also reached that way, stores more often and is left out). A
# variant is named by what it does: FSETP (the mask), FMNMX (ReLU), loads from the addresses it
# stores to (accumulate) or from elsewhere (the bias).
print("epilogue fast variants (instructions for a thread's pairs; per pair):")
for name in ["grouped_gemm_fwd_bf16_sm90", "grouped_gemm_wgrad_bf16_sm90", "grouped_gemm_fwd_bf16", "grouped_gemm_fwd_f32"]:
    ins = funcs[name]
    addrs = [a for a, _ in ins]
    tgts = sorted({int(t, 16) for a, i in ins if 'BRA' in i for t in re.findall(r'0x([0-9a-f]+)', i) if int(t, 16) - a > 0x4000})
    bounds = tgts + [addrs[-1]]
    blocks = []
    for t, nxt in zip(bounds, bounds[1:]):
        body = [i for a, i in ins if t <= a < nxt]
        stores = [m.group(1) for i in body for m in [re.search(r'\bST\.\S*\s+(desc\[[^\]]*\]\[[^\]]*\])', i)] if m]
        loads = [m.group(1) for i in body for m in [re.search(r'\bLD\.\S*\s+\S+,\s*(desc\[[^\]]*\]\[[^\]]*\])', i)] if m]
        if stores:
            blocks.append((body, stores, loads))
    pairs = max(set(len(b[1]) for b in blocks), key=lambda n: sum(len(b[1]) == n for b in blocks))
    print(f"  {name} ({pairs} pairs per thread):")
    for body, stores, loads in blocks:
        if len(stores) != pairs:
            continue
        mask, relu = any('FSETP' in i for i in body), any('FMNMX' in i for i in body)
        acc = loads and sum(l in stores for l in loads) * 2 > len(loads)
        what = "ReLU mask" if mask else "accumulate" if acc else ("bias + ReLU" if loads else "ReLU") if relu else "bias" if loads else "plain"
        print(f"    {what:12} {len(body):6} ({len(body) / pairs:.1f} per pair)")
PY
