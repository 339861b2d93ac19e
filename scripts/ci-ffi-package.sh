#!/usr/bin/env bash
# Checks the C/C++ packaging: installs the C ABI into a temporary prefix with scripts/install-ffi.sh,
# then builds ffi/examples/translate.cpp the way a C++ project would, through pkg-config, against
# the shared and the static library, and runs both on a missing model (a clean error, exit 1).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="$(mktemp -d)"
trap 'rm -rf "$prefix"' EXIT
scripts/install-ffi.sh "$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
g++ -std=c++17 -Wall -Wextra -Werror ffi/examples/translate.cpp $(pkg-config --cflags --libs automoe) \
    -Wl,-rpath,"$prefix/lib" -o "$prefix/translate_shared"
g++ -std=c++17 -Wall -Wextra -Werror ffi/examples/translate.cpp $(pkg-config --cflags automoe) \
    "$prefix/lib/libautomoe.a" $(pkg-config --static --libs-only-l automoe | sed 's/-lautomoe//') -o "$prefix/translate_static"
for bin in translate_shared translate_static; do
    set +e
    err="$("$prefix/$bin" "$prefix/no-model" </dev/null 2>&1)"
    code=$?
    set -e
    if [ "$code" != 1 ] || ! grep -q AUTOMOE_IO <<<"$err"; then
        echo "ci-ffi-package: $bin should fail cleanly on a missing model, got exit $code: $err" >&2
        exit 1
    fi
done
echo "ci-ffi-package: pkg-config build of the example works (shared and static)"
# The CMake package, when cmake is installed (it is not part of the base image).
if command -v cmake >/dev/null 2>&1; then
    mkdir -p "$prefix/cmake-check"
    cat > "$prefix/cmake-check/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.16)
project(automoe_check CXX)
set(CMAKE_CXX_STANDARD 17)
find_package(automoe REQUIRED)
add_executable(translate_shared "$PWD/ffi/examples/translate.cpp")
target_link_libraries(translate_shared PRIVATE automoe::automoe)
add_executable(translate_static "$PWD/ffi/examples/translate.cpp")
target_link_libraries(translate_static PRIVATE automoe::automoe_static)
CMAKE
    cmake -S "$prefix/cmake-check" -B "$prefix/cmake-check/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
    cmake --build "$prefix/cmake-check/build" >/dev/null
    for bin in translate_shared translate_static; do
        if "$prefix/cmake-check/build/$bin" "$prefix/no-model" </dev/null >/dev/null 2>&1; then
            echo "ci-ffi-package: CMake-built $bin should fail on a missing model" >&2
            exit 1
        fi
    done
    echo "ci-ffi-package: CMake package works (automoe::automoe and automoe::automoe_static)"
else
    echo "ci-ffi-package: cmake not installed; CMake package check skipped"
fi
