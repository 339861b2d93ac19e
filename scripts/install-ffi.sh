#!/usr/bin/env bash
# Builds the C ABI (release) and installs it under PREFIX: lib/libautomoe.{a,so},
# include/automoe.{h,hpp}, lib/pkgconfig/automoe.pc, lib/cmake/automoe/.
# Usage: scripts/install-ffi.sh PREFIX
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${1:?usage: scripts/install-ffi.sh PREFIX}"
mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"
cargo build --release --lib
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
# The system libraries a static link needs, as rustc reports them (the kernel emulator inside
# the library brings the C++ runtime).
native="$(cargo rustc --release --lib --quiet -- --print native-static-libs 2>&1 | sed -n 's/.*native-static-libs: //p' | tail -n 1)"
mkdir -p "$prefix/lib/pkgconfig" "$prefix/lib/cmake/automoe" "$prefix/include"
cp target/release/libautomoe.a target/release/libautomoe.so "$prefix/lib/"
cp ffi/automoe.h ffi/automoe.hpp "$prefix/include/"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" -e "s|@NATIVE_LIBS@|$native|" ffi/automoe.pc.in > "$prefix/lib/pkgconfig/automoe.pc"
cp ffi/cmake/automoeConfig.cmake "$prefix/lib/cmake/automoe/"
echo "set(AUTOMOE_NATIVE_LIBS \"$(echo $native | sed 's/-l//g' | tr ' ' ';')\")" > "$prefix/lib/cmake/automoe/automoeNativeLibs.cmake"
echo "installed automoe $version under $prefix"
