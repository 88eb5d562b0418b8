#!/usr/bin/env bash
# End-to-end security's cost (SPEC §8), on demand: homd with HOM_E2E=off and with
# HOM_E2E=require side by side on a private Mosquitto and nginx, the same client
# (hom-e2e-load: hom's Requester, clear or sealed) against each, p50 at c=1 and throughput at
# c=64, and the figures against the targets: at most 300 µs added at c=1, at least 60 % of
# the throughput at c=64. The replay cache lives on disk (HOM_STATE_DIR under TMPDIR), so its
# fdatasync is in the figures.
#
# Environment: DURATION (s per cell, 10), BUILD_DIR, HOMD_WORKERS (4), QOS (1).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
DURATION=${DURATION:-10}
BUILD_DIR=${BUILD_DIR:-$root/build-bench}
HOMD_WORKERS=${HOMD_WORKERS:-4}
QOS=${QOS:-1}

prog=e2e.sh
# shellcheck source=bench/lib.sh
source "$here/lib.sh"

find_servers
command -v ssh-keygen >/dev/null || die "ssh-keygen not found; run scripts/deps.sh"
build homd hom-loadgen hom-e2e-load hom-e2e-ops
E2E_LOAD=$BUILD_DIR/bench/hom-e2e-load
make_tmp
[[ -n ${KEEP:-} ]] && keep_tmp=1

broker_port=$(free_port)
{
  broker_conf "$broker_port" true
  echo "persistence false"
} >"$tmp/mosquitto.conf"
start_mosquitto "$tmp/mosquitto.conf" "$tmp/mosquitto.log" "$broker_port" ||
  die "mosquitto did not start: $(cat "$tmp/mosquitto.log")"
start_nginx ""

ssh-keygen -q -t ed25519 -N '' -C device -f "$tmp/device"
ssh-keygen -q -t ed25519 -N '' -C bench -f "$tmp/user"
cp "$tmp/user.pub" "$tmp/authorized_keys"
echo "bench-e2e $(cut -d' ' -f1,2 "$tmp/device.pub")" >"$tmp/known_devices"
mkdir -m 700 "$tmp/state"

start_homd() {
  local id=$1
  shift
  env -i PATH="$PATH" GNUTLS_NO_IMPLICIT_INIT=1 MQTT_HOST=127.0.0.1 MQTT_PORT="$broker_port" \
    MQTT_TLS=off MQTT_TOPIC_ID="$id" HTTP_BASE_URL="http://127.0.0.1:$api_port/" LOG_LEVEL=warn \
    WORKERS="$HOMD_WORKERS" "$@" "$HOMD" >"$tmp/homd-$id.log" 2>&1 &
  pids+=("$!")
  homd_pid=$!
}
start_homd bench-off HOM_E2E=off
off_pid=$homd_pid
start_homd bench-e2e HOM_E2E=require HOM_DEVICE_KEY_FILE="$tmp/device" \
  HOM_AUTHORIZED_KEYS_FILE="$tmp/authorized_keys" HOM_STATE_DIR="$tmp/state"
e2e_pid=$homd_pid

tck=$(getconf CLK_TCK)
# run ID C [sealed]: one JSON line; sets cpu_ms: homd's CPU per request (ms).
run() {
  local pid=$off_pid cpu0 cpu1
  [[ $1 == bench-e2e ]] && pid=$e2e_pid
  read -r _ _ _ cpu0 _ <<<"$(sample "$pid")"
  local args=(--port "$broker_port" --id "$1" -c "$2" -q "$QOS" -d "$DURATION")
  [[ ${3:-} == sealed ]] && args+=(--identity "$tmp/user" --known-devices "$tmp/known_devices")
  local out
  out=$("$E2E_LOAD" "${args[@]}" 2>>"$tmp/load.err") ||
    die "hom-e2e-load failed on $1: $out $(tail -3 "$tmp/load.err") $(tail -5 "$tmp/homd-$1.log")"
  read -r _ _ _ cpu1 _ <<<"$(sample "$pid")"
  # The warm-up's requests count too: homd's CPU over all replies of the run.
  local n
  n=$(jget ok "$out")
  cpu_ms=$(awk -v t=$((cpu1 - cpu0)) -v h="$tck" -v n="$n" -v d="$DURATION" \
    'BEGIN {printf "%.3f", (n > 0 ? t / h * 1000 / (n * (d + 1) / d) : 0)}')
  result=$out
}
jget() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" <<<"$2"; }

# probe ID [sealed]: waits (20 s at most) until the homd on ID answers.
probe() {
  local i args=(--port "$broker_port" --id "$1" -c 1 -d 0.2 --warmup 0 --timeout 1)
  [[ ${2:-} == sealed ]] && args+=(--identity "$tmp/user" --known-devices "$tmp/known_devices")
  for ((i = 0; i < 20; i++)); do
    "$E2E_LOAD" "${args[@]}" >/dev/null 2>&1 && return 0
  done
  die "no reply from homd on $1: $(cat "$tmp/homd-$1.log")"
}
probe bench-off
probe bench-e2e sealed

[[ -n ${E2E_HOOK:-} ]] && eval "$E2E_HOOK"
run bench-off 1 && off1=$result cpu_off1=$cpu_ms
run bench-e2e 1 sealed && e2e1=$result cpu_e2e1=$cpu_ms
run bench-off 64 && off64=$result cpu_off64=$cpu_ms
run bench-e2e 64 sealed && e2e64=$result cpu_e2e64=$cpu_ms

p50_off=$(jget p50_us "$off1")
p50_e2e=$(jget p50_us "$e2e1")
tp_off=$(jget throughput "$off64")
tp_e2e=$(jget throughput "$e2e64")
added=$(awk -v a="$p50_e2e" -v b="$p50_off" 'BEGIN {printf "%.0f", a - b}')
ratio=$(awk -v a="$tp_e2e" -v b="$tp_off" 'BEGIN {printf "%.0f", (b > 0 ? 100 * a / b : 0)}')
verdict() { [[ $1 == 1 ]] && echo "met" || echo "MISSED"; }

echo "## End-to-end security: HOM_E2E=require against off (QoS $QOS, ${DURATION} s per cell, $HOMD_WORKERS workers)"
echo
echo "| | off | require | target | |"
echo "| --- | ---: | ---: | --- | --- |"
printf '| p50 at c=1 (µs) | %.0f | %.0f | ≤ 300 µs added (added: %s µs) | %s |\n' \
  "$p50_off" "$p50_e2e" "$added" "$(verdict "$(awk -v a="$added" 'BEGIN {print (a <= 300)}')")"
printf '| p90 at c=1 (µs) | %.0f | %.0f | | |\n' "$(jget p90_us "$off1")" "$(jget p90_us "$e2e1")"
printf '| throughput at c=64 (/s) | %.0f | %.0f | ≥ 60 %% (%s %%) | %s |\n' \
  "$tp_off" "$tp_e2e" "$ratio" "$(verdict "$(awk -v r="$ratio" 'BEGIN {print (r >= 60)}')")"
printf '| p50 at c=64 (µs) | %.0f | %.0f | | |\n' "$(jget p50_us "$off64")" "$(jget p50_us "$e2e64")"
printf '| homd CPU per request at c=1, c=64 (ms) | %s, %s | %s, %s | | |\n' "$cpu_off1" "$cpu_off64" \
  "$cpu_e2e1" "$cpu_e2e64"
printf '| errors (c=1, c=64) | %s, %s | %s, %s | 0 | |\n' "$(jget errors "$off1")" \
  "$(jget errors "$off64")" "$(jget errors "$e2e1")" "$(jget errors "$e2e64")"
echo
echo "### Where the time goes: each step of a sealed call, alone on one core (hom-e2e-ops)"
echo
"$BUILD_DIR/bench/hom-e2e-ops" "$tmp/device" "$tmp/user" 500
