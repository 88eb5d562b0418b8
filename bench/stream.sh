#!/usr/bin/env bash
# Streamed bodies (protocol v1.1, SPEC §7) against their limits, in one run (bench/README.md,
# "Streams"): a SIZE-byte download from the demo API (GET /files/blob, byte i = i % 251)
# fetched by curl directly (the HTTP limit), published by a bare Paho client through the same
# broker in QoS 1 messages of the chunk size (the MQTT limit, hom-mqtt-floor), through
# `hom get … -o FILE`, and through hom-gateway with curl; then a SIZE-byte upload through
# `hom put … --data-binary @FILE`; and the download sealed end to end (SPEC §8: a second homd
# with HOM_E2E=require, `hom --identity … -o FILE`). Every body's SHA-256 is checked; the peak RSS growth of
# homd, hom and the gateway is printed against the 8 MB target. Prints Markdown; stops
# everything it started, by PID.
#
# Environment: SIZE (bytes, 268435456), MAX_PACKET (Mosquitto's max_packet_size, e.g. 131072
# as AWS IoT Core; default none) and MQTT_MAX_MESSAGE_BYTES of homd, hom and the gateway
# (MAX_PACKET, else 262144), KEEP (1: keep the logs),
# FLOOR_WINDOWS (unacknowledged publishes of the MQTT limit, "8 64"), BUILD_DIR.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
SIZE=${SIZE:-268435456}
MAX_PACKET=${MAX_PACKET:-}
FLOOR_WINDOWS=${FLOOR_WINDOWS:-"8 64"}
BUILD_DIR=${BUILD_DIR:-$root/build-bench}
DEVICE=bench-stream-dev
TOKEN=bench-token
RSS_TARGET_KB=8192

prog=stream.sh
# shellcheck source=bench/lib.sh disable=SC2034,SC2154  # variables shared with lib.sh
source "$here/lib.sh"

MOSQUITTO=$(find_tool mosquitto)
[[ -n $MOSQUITTO ]] || die "mosquitto not found; run bench/deps.sh"
CURL=$(find_tool curl)
[[ -n $CURL ]] || die "curl not found"
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (Debian package time)"
build homd hom hom-gateway hom-demo-api hom-loadgen hom-mqtt-floor
HOM=$BUILD_DIR/hom
GATEWAY=$BUILD_DIR/hom-gateway
DEMO=$BUILD_DIR/hom-demo-api
FLOOR=$BUILD_DIR/bench/hom-mqtt-floor
make_tmp
keep_tmp=${KEEP:-}  # KEEP=1: the logs stay

# The chunk size homd uses: the message limit less the chunk's topic and metadata (an upper
# bound of homd's own computation, so the MQTT limit is not flattered by larger messages).
message_bytes=${MAX_PACKET:-262144}
chunk=$((message_bytes - 512))

# The expected digest, computed apart from everything measured.
want=$(python3 - "$SIZE" <<'EOF'
import hashlib, sys
n = int(sys.argv[1]); block = bytes(range(251)) * 4096; h = hashlib.sha256()
while n > 0:
    h.update(block[:n]); n -= len(block)
print(h.hexdigest())
EOF
)

now() { date +%s.%N; }
mbps() { awk -v b="$1" -v t0="$2" -v t1="$3" 'BEGIN {printf "%.1f", b / 1e6 / (t1 - t0)}'; }
hwm() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# reset_peak PID: VmHWM restarts from the current RSS (proc(5), clear_refs "5").
reset_peak() { echo 5 >"/proc/$1/clear_refs"; }
check_sha() {  # NAME DIGEST
  [[ $2 == "$want" ]] || die "$1: SHA-256 $2, want $want"
}

# --- the processes -------------------------------------------------------------------------
broker_port=$(free_port)
{
  broker_conf "$broker_port" true
  echo "persistence false"
  if [[ -n $MAX_PACKET ]]; then echo "max_packet_size $MAX_PACKET"; fi
} >"$tmp/mosquitto.conf"
start_mosquitto "$tmp/mosquitto.conf" "$tmp/mosquitto.log" "$broker_port" ||
  die "mosquitto did not start: $(cat "$tmp/mosquitto.log")"

api_port=$(free_port)
"$DEMO" "$api_port" >"$tmp/api.log" 2>&1 &
pids+=($!)
wait_port "$api_port" 10 || die "the demo API did not start: $(cat "$tmp/api.log")"

# MQTT_MAX_MESSAGE_BYTES explicitly: without it and without a Maximum Packet Size in the
# broker's CONNACK, homd and hom take MQTT's own limit (256 MiB) and the chunks grow as large.
mqtt_env=(MQTT_HOST=127.0.0.1 MQTT_PORT="$broker_port" MQTT_TLS=off
  MQTT_MAX_MESSAGE_BYTES="$message_bytes")
env -i PATH="$PATH" "${mqtt_env[@]}" MQTT_TOPIC_ID="$DEVICE" \
  HTTP_BASE_URL="http://127.0.0.1:$api_port/" HTTP_TIMEOUT_MS=600000 LOG_LEVEL=warn \
  "$BUILD_DIR/homd" >"$tmp/homd.log" 2>&1 &
homd_pid=$!
pids+=("$homd_pid")
hom() { env -i PATH="$PATH" "${mqtt_env[@]}" "$HOM" "$@"; }
for ((i = 0; i < 100; i++)); do
  hom -s get "$DEVICE" status >/dev/null 2>&1 && break
  alive "$homd_pid" || die "homd exited: $(cat "$tmp/homd.log")"
  sleep 0.1
done

# The same API behind a homd that takes sealed requests only (end to end, SPEC §8).
command -v ssh-keygen >/dev/null || die "ssh-keygen not found; run scripts/deps.sh"
SEALED_DEVICE=$DEVICE-sealed
ssh-keygen -q -t ed25519 -N '' -C device -f "$tmp/device"
ssh-keygen -q -t ed25519 -N '' -C bench -f "$tmp/user"
cp "$tmp/user.pub" "$tmp/authorized_keys"
echo "$SEALED_DEVICE $(cut -d' ' -f1,2 "$tmp/device.pub")" >"$tmp/known_devices"
mkdir -m 700 "$tmp/state"
env -i PATH="$PATH" "${mqtt_env[@]}" MQTT_TOPIC_ID="$SEALED_DEVICE" \
  HTTP_BASE_URL="http://127.0.0.1:$api_port/" HTTP_TIMEOUT_MS=600000 LOG_LEVEL=warn \
  HOM_E2E=require HOM_DEVICE_KEY_FILE="$tmp/device" HOM_STATE_DIR="$tmp/state" \
  HOM_AUTHORIZED_KEYS_FILE="$tmp/authorized_keys" \
  "$BUILD_DIR/homd" >"$tmp/homd-sealed.log" 2>&1 &
sealed_pid=$!
pids+=("$sealed_pid")
sealed=(--identity "$tmp/user" --known-devices "$tmp/known_devices")
for ((i = 0; i < 100; i++)); do
  hom -s "${sealed[@]}" get "$SEALED_DEVICE" status >/dev/null 2>&1 && break
  alive "$sealed_pid" || die "homd (sealed) exited: $(cat "$tmp/homd-sealed.log")"
  sleep 0.1
done

echo "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1) * GET * bench" >"$tmp/tokens"
gw_port=$(free_port)
env -i PATH="$PATH" "${mqtt_env[@]}" GATEWAY_LISTEN="127.0.0.1:$gw_port" \
  GATEWAY_TOKENS_FILE="$tmp/tokens" LOG_LEVEL=warn "$GATEWAY" >"$tmp/gateway.log" 2>&1 &
gw_pid=$!
pids+=("$gw_pid")
gw_url="http://127.0.0.1:$gw_port/$DEVICE"
for ((i = 0; i < 200; i++)); do
  [[ $("$CURL" -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
    "$gw_url/status") == 200 ]] && break
  alive "$gw_pid" || die "hom-gateway exited: $(cat "$tmp/gateway.log")"
  sleep 0.1
done

# hom's peak RSS for a tiny download: its floor, against which a large one's growth counts.
/usr/bin/time -f %M -o "$tmp/hom-floor.kb" env -i PATH="$PATH" "${mqtt_env[@]}" \
  "$HOM" -s get "$DEVICE" files/blob -G size=1000 -o "$tmp/small.bin"
hom_floor_kb=$(tail -n 1 "$tmp/hom-floor.kb")

rows=()
row() { rows+=("| $1 | $2 | $3 | $4 | $5 |"); }
# The growth of a server's peak over a transfer: VmHWM after less VmRSS before.
growth_cell() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f MB", (a - b) / 1024}'; }

# (b) the HTTP limit: curl from the API directly.
file=$tmp/body.bin
t0=$(now)
"$CURL" -sf -o "$file" "http://127.0.0.1:$api_port/files/blob?size=$SIZE" || die "curl failed"
t1=$(now)
check_sha "curl direct" "$(sha256sum "$file" | cut -d' ' -f1)"
http_mbps=$(mbps "$SIZE" "$t0" "$t1")
row "curl ← API directly (HTTP limit)" "$http_mbps" "" "" ""
rm -f "$file"

# (a) the MQTT limit: the same bytes in QoS 1 messages of the chunk size.
floor_best=0
for w in $FLOOR_WINDOWS; do
  read -r _ _ f_mbps f_sha < <("$FLOOR" --port "$broker_port" --size "$SIZE" --chunk "$chunk" \
    --window "$w") || die "hom-mqtt-floor failed"
  check_sha "hom-mqtt-floor" "$f_sha"
  row "Paho QoS 1, $chunk-byte messages, $w in flight (MQTT limit)" "$f_mbps" "" "" ""
  floor_best=$(awk -v a="$floor_best" -v b="$f_mbps" 'BEGIN {print (b > a ? b : a)}')
done
pct() { awk -v a="$1" -v b="$floor_best" 'BEGIN {printf "%.0f %%", 100 * a / b}'; }

# hom_download LABEL HOMD_PID HOM_ARGS...: `hom -s HOM_ARGS -o FILE` timed and checked, its row.
hom_download() {
  local label=$1 pid=$2 before m kb
  shift 2
  reset_peak "$pid"
  before=$(rss "$pid")
  t0=$(now)
  /usr/bin/time -f %M -o "$tmp/hom.kb" env -i PATH="$PATH" "${mqtt_env[@]}" \
    "$HOM" -s "$@" -o "$file" --timeout 10m || die "$label failed"
  t1=$(now)
  check_sha "$label" "$(sha256sum "$file" | cut -d' ' -f1)"
  m=$(mbps "$SIZE" "$t0" "$t1")
  kb=$(tail -n 1 "$tmp/hom.kb")
  row "$label" "$m" "$(pct "$m")" "homd $(growth_cell "$(hwm "$pid")" "$before")" \
    "hom $(growth_cell "$kb" "$hom_floor_kb") (peak $(mb "$kb") MB)"
  rm -f "$file"
}
hom_download "hom get -o FILE" "$homd_pid" get "$DEVICE" files/blob -G size="$SIZE"
# The same download sealed end to end.
hom_download "hom --identity get -o FILE (sealed end to end)" "$sealed_pid" "${sealed[@]}" \
  get "$SEALED_DEVICE" files/blob -G size="$SIZE"

# curl through the gateway.
reset_peak "$homd_pid"
reset_peak "$gw_pid"
homd_before=$(rss "$homd_pid")
gw_before=$(rss "$gw_pid")
t0=$(now)
"$CURL" -sf -H "Authorization: Bearer $TOKEN" -o "$file" "$gw_url/files/blob?size=$SIZE" ||
  die "curl through the gateway failed: $(tail -5 "$tmp/gateway.log")"
t1=$(now)
check_sha "the gateway" "$(sha256sum "$file" | cut -d' ' -f1)"
gw_mbps=$(mbps "$SIZE" "$t0" "$t1")
row "curl ← hom-gateway" "$gw_mbps" "$(pct "$gw_mbps")" \
  "homd $(growth_cell "$(hwm "$homd_pid")" "$homd_before")" \
  "gateway $(growth_cell "$(hwm "$gw_pid")" "$gw_before")"

# hom put --data-binary @FILE (the file just downloaded).
reset_peak "$homd_pid"
homd_before=$(rss "$homd_pid")
t0=$(now)
/usr/bin/time -f %M -o "$tmp/hom-put.kb" env -i PATH="$PATH" "${mqtt_env[@]}" \
  "$HOM" -s put "$DEVICE" files/upload --data-binary "@$file" --timeout 10m >"$tmp/put.json" ||
  die "hom put failed: $(cat "$tmp/put.json")"
t1=$(now)
put_sha=$(sed -n 's/.*"sha256": *"\([0-9a-f]*\)".*/\1/p' "$tmp/put.json")
put_len=$(sed -n 's/.*"length": *\([0-9]*\).*/\1/p' "$tmp/put.json")
[[ $put_len == "$SIZE" ]] || die "hom put: the API received $put_len bytes: $(cat "$tmp/put.json")"
check_sha "hom put" "$put_sha"
put_mbps=$(mbps "$SIZE" "$t0" "$t1")
put_kb=$(tail -n 1 "$tmp/hom-put.kb")
row "hom put --data-binary @FILE (upload)" "$put_mbps" "$(pct "$put_mbps")" \
  "homd $(growth_cell "$(hwm "$homd_pid")" "$homd_before")" \
  "hom $(growth_cell "$put_kb" "$hom_floor_kb") (peak $(mb "$put_kb") MB)"
rm -f "$file"

echo "SIZE=$SIZE bytes, broker max_packet_size ${MAX_PACKET:-none}, chunk ≤ $chunk bytes," \
  "SHA-256 checked for every row; $(nproc) CPUs."
echo
echo "| path | MB/s | of the MQTT limit | RSS growth (server) | RSS growth (client) |"
echo "| --- | ---: | ---: | --- | --- |"
printf '%s\n' "${rows[@]}"
echo
echo "RSS target: each process grows by ≤ $((RSS_TARGET_KB / 1024)) MB (peak VmHWM, or" \
  "/usr/bin/time's maximum, less the RSS before); hom's floor is its peak for a 1000-byte" \
  "download ($(mb "$hom_floor_kb") MB)."
