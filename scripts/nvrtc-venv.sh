#!/usr/bin/env bash
# Creates .venv-nvrtc with NVRTC 13.0 and the CUDA headers from PyPI wheels (no GPU, no toolkit
# needed), then prints the LD_LIBRARY_PATH / AUTOMOE_CUDA_INCLUDE lines to export.
# Usage: scripts/nvrtc-venv.sh [venv-dir]   (default: .venv-nvrtc in the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
V="${1:-.venv-nvrtc}"
if [ ! -x "$V/bin/python3" ]; then
    python3 -m venv "$V"
fi
"$V/bin/pip" install --quiet --disable-pip-version-check \
    nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
L="$(ls -d "$PWD/$V"/lib/python3*/site-packages/nvidia/cu13 | head -n 1)"
test -e "$L/lib/libnvrtc.so.13" || { echo "libnvrtc.so.13 missing under $L/lib" >&2; exit 1; }
echo "export LD_LIBRARY_PATH=$L/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
echo "export AUTOMOE_CUDA_INCLUDE=$L/include"
