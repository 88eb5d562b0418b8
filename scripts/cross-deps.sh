#!/usr/bin/env bash
# Installs what cross-building and testing for other architectures needs, on Debian 12 (amd64):
#
#   scripts/cross-deps.sh ARCH...      ARCH: arm64, armhf
#
# Per ARCH: `dpkg --add-architecture ARCH` (multiarch), Debian's cross compiler
# (crossbuild-essential-ARCH) and the target's -dev packages (libfoo-dev:ARCH); once:
# qemu-user-static, which runs the target's binaries in the tests. Needs root (re-runs itself
# through sudo otherwise). A no-op when all are installed.
set -euo pipefail

if (($# == 0)); then
  echo "usage: scripts/cross-deps.sh ARCH... (arm64, armhf)" >&2
  exit 2
fi

# The target's libraries that CMakeLists.txt links (scripts/deps.sh has the build machine's);
# the header-only ones (nlohmann-json3-dev, libcli11-dev: Architecture all) come from there.
target_packages=(libpaho-mqttpp-dev libpaho-mqtt-dev libcurl4-openssl-dev libssl-dev
  libspdlog-dev libgtest-dev libsystemd-dev libboost1.81-dev libsodium-dev)

packages=(qemu-user-static)
for arch in "$@"; do
  case $arch in
    arm64 | armhf) ;;
    *) echo "cross-deps: unknown architecture $arch (arm64, armhf)" >&2; exit 2 ;;
  esac
  packages+=("crossbuild-essential-$arch")
  for p in "${target_packages[@]}"; do packages+=("$p:$arch"); done
done

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
  [[ "$status" == installed ]] || missing+=("$package")
done
if ((${#missing[@]} == 0)); then
  echo "cross-deps: all ${#packages[@]} packages are installed"
  exit 0
fi

if ((EUID != 0)); then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo -- "$(readlink -f "$0")" "$@"
  fi
  echo "cross-deps: missing packages (${missing[*]}); run this script as root" >&2
  exit 1
fi

for arch in "$@"; do
  if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    echo "cross-deps: dpkg --add-architecture $arch"
    dpkg --add-architecture "$arch"
  fi
done
echo "cross-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
# A library installed for two architectures must have the same version in both: apt upgrades
# the build machine's copy when the archive has a newer one. Nothing is removed.
apt-get install -y --no-install-recommends "${missing[@]}"
