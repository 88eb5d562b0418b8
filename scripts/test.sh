#!/usr/bin/env bash
# Builds everything with warnings as errors and runs the whole test suite (unit and
# integration tests; the latter start their own Mosquitto and HTTP servers on free ports).
#
#   scripts/test.sh [CTEST ARGS...]       e.g. scripts/test.sh -L unit
#
# Environment: BUILD_DIR (default: build), CMAKE_ARGS (extra configure arguments), e.g.
#   BUILD_DIR=build-asan CMAKE_ARGS="-DHOM_SANITIZE=ON" scripts/test.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build_dir=${BUILD_DIR:-build}

"$root/scripts/deps.sh"

generator=()
[[ -f "$build_dir/CMakeCache.txt" ]] || generator=(-G Ninja)
# shellcheck disable=SC2086 # CMAKE_ARGS is a list of words on purpose
cmake -S . -B "$build_dir" "${generator[@]}" -DHOM_WERROR=ON -DHOM_BUILD_TESTS=ON ${CMAKE_ARGS:-}
cmake --build "$build_dir" -j2
ctest --test-dir "$build_dir" --output-on-failure -j2 "$@"
