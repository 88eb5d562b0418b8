#!/usr/bin/env bash
# Cross-builds http-over-mqtt for other Debian architectures on an amd64 Debian 12 machine,
# packages it and tests it under qemu-user:
#
#   scripts/cross.sh [ARCH...]     ARCH: arm64, armhf (default: both)
#
# For each ARCH, in build-ARCH/ (cmake/toolchain-*.cmake, warnings as errors): homd, hom,
# hom-gateway and the unit tests; then ctest runs the unit tests under qemu-user (label unit),
# checks the .deb (label package) and serves a request with the target's homd under
# qemu-user through the build machine's Mosquitto and `hom` (label cross); last, cpack
# leaves the .deb in build-ARCH/ and its control data is printed.
#
# Environment: HOST_BUILD_DIR (default: build), the build machine's tree where `hom` is
# built (only that target; configured as scripts/test.sh does when missing).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
(($# > 0)) || set -- arm64 armhf
host_build=${HOST_BUILD_DIR:-build}

"$root/scripts/deps.sh"
"$root/scripts/cross-deps.sh" "$@"

step() { printf '\n== cross: %s ==\n' "$*"; }
timed() {
  local started=$SECONDS
  "$@"
  echo "cross: $((SECONDS - started)) s: $*"
}

step "the build machine's hom ($host_build)"
if [[ ! -f "$host_build/CMakeCache.txt" ]]; then
  cmake -S . -B "$host_build" -G Ninja -DHOM_WERROR=ON -DHOM_BUILD_TESTS=ON
fi
timed cmake --build "$host_build" -j2 --target hom
host_hom=$(cd "$host_build" && pwd)/hom

for arch in "$@"; do
  case $arch in
    arm64) toolchain=cmake/toolchain-aarch64-linux-gnu.cmake ;;
    armhf) toolchain=cmake/toolchain-arm-linux-gnueabihf.cmake ;;
    *) echo "cross: unknown architecture $arch (arm64, armhf)" >&2; exit 2 ;;
  esac
  dir=build-$arch
  step "$arch: configure and build ($dir)"
  generator=()
  [[ -f "$dir/CMakeCache.txt" ]] || generator=(-G Ninja)
  # What the package holds and the unit tests need: no demo API, no benchmark tools.
  cmake -S . -B "$dir" "${generator[@]}" -DCMAKE_TOOLCHAIN_FILE="$root/$toolchain" \
    -DHOM_WERROR=ON -DHOM_BUILD_TESTS=ON -DHOM_BUILD_DEMO=OFF -DHOM_BUILD_BENCH=OFF \
    -DHOM_HOST_HOM="$host_hom"
  timed cmake --build "$dir" -j2

  step "$arch: tests under qemu-user (unit, package, cross)"
  timed ctest --test-dir "$dir" --output-on-failure -j2

  step "$arch: the package"
  (cd "$dir" && cpack -G DEB >/dev/null)
  deb=$(ls "$dir"/http-over-mqtt_*_"$arch".deb)
  dpkg-deb --info "$deb"
  echo "cross: $deb, $(stat -c %s "$deb") bytes"
done
