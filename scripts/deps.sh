#!/usr/bin/env bash
# Installs every Debian 12 package needed to build, test and try http-over-mqtt.
# Needs root (re-runs itself through sudo otherwise). A no-op when all are installed.
set -euo pipefail

packages=(
  # toolchain (dpkg-dev: the .deb)
  build-essential dpkg-dev cmake clang libclang-rt-14-dev ninja-build pkg-config clang-format
  # libraries
  libpaho-mqttpp-dev libpaho-mqtt-dev libcurl4-openssl-dev nlohmann-json3-dev libssl-dev
  libspdlog-dev libgtest-dev libcli11-dev libcpp-httplib-dev libsystemd-dev libboost1.81-dev
  libsodium-dev
  # broker and tools for the tests and the quick start
  mosquitto mosquitto-clients openssl ca-certificates python3 valgrind curl
  # the load balancer in front of two gateways (tests/integration/gateway_scale_test.cpp)
  nginx-light
  # third-party peers of the interop tests (tests/interop/): Paho for Python, RabbitMQ's
  # MQTT plugin (the tests start their own node; the package's own service is not used)
  python3-paho-mqtt rabbitmq-server
  # the browser test (tests/browser/): Debian's Chromium, driven by playwright-core, and a
  # font for its screenshots
  chromium fonts-dejavu-core
  # the gateway's tests: Python requests as an HTTP client
  python3-requests
  # reference tools of the end-to-end tests (tests/unit/e2e_*): ssh-keygen -Y, age
  openssh-client age
)
# MQTT.js and aedes (tests/interop/package.json) and playwright-core (tests/browser/) need
# Node.js and npm: Debian's, unless a node is already on PATH.
if ! command -v node >/dev/null 2>&1; then
  packages+=(nodejs npm)
fi

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
  if [[ "$status" != installed ]]; then
    missing+=("$package")
  fi
done

# The Node.js packages of the interop and browser tests, exactly as each package-lock.json
# pins them: `npm ci` when node_modules is missing or older than the lock file. Needs no root.
# (playwright-core downloads no browser on install; the test uses Debian's chromium.)
interop_node_modules() {
  local name dir
  for name in interop browser; do
    dir="$(dirname "$(readlink -f "$0")")/../tests/$name"
    if [[ ! -f "$dir/node_modules/.package-lock.json" ||
          "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]]; then
      echo "deps: npm ci --prefix tests/$name"
      npm ci --prefix "$dir" --no-audit --no-fund
    fi
  done
}

if ((${#missing[@]} == 0)); then
  echo "deps: all ${#packages[@]} packages are installed"
  interop_node_modules
  exit 0
fi

if ((EUID != 0)); then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo -- "$(readlink -f "$0")" "$@"
  fi
  echo "deps: missing packages (${missing[*]}); run this script as root" >&2
  exit 1
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
interop_node_modules
