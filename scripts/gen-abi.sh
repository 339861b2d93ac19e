#!/usr/bin/env bash
# Regenerates src/cuda/abi.rs from cuda/abi.h with bindgen (tools/gen-abi, a separate crate, so
# bindgen is never a build dependency of automoe). Needs libclang: apt-get install libclang-dev.
#   scripts/gen-abi.sh          rewrite src/cuda/abi.rs
#   scripts/gen-abi.sh --check  regenerate into a temporary file and fail if it differs (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1
if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 && [ -z "${LIBCLANG_PATH:-}" ]; then
    echo "gen-abi: libclang not found; install it (Debian: apt-get install libclang-dev) or set LIBCLANG_PATH" >&2
    exit 1
fi
cargo build --quiet --release --manifest-path tools/gen-abi/Cargo.toml
out="$(mktemp --suffix=.rs)"
trap 'rm -f "$out"' EXIT
status=0
# (committed file, header, gen-abi mode): the kernel ABI and the C ABI header.
for pair in "src/cuda/abi.rs cuda/abi.h kernels" "src/capi/header.rs ffi/automoe.h ffi"; do
    set -- $pair
    tools/gen-abi/target/release/gen-abi "$PWD" "$3" > "$out"
    # Same formatting as `cargo fmt` gives the committed file.
    rustfmt --edition 2021 --config-path rustfmt.toml "$out"
    if [ "$CHECK" = 1 ]; then
        if diff -u "$1" "$out"; then
            echo "gen-abi: $1 matches $2"
        else
            echo "gen-abi: $1 is stale; run scripts/gen-abi.sh and commit the result" >&2
            status=1
        fi
    else
        cp "$out" "$1"
        echo "gen-abi: wrote $1"
    fi
done
exit $status
