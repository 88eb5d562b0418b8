#!/usr/bin/env bash
# Quick start: builds homd and the demo API, then runs the whole path once on this machine:
#
#   hom ──MQTT──> private Mosquitto ──> homd ──HTTP──> hom-demo-api
#   hom <──────── private Mosquitto <── homd <──────── (response)
#   curl ──HTTP──> hom-gateway ──MQTT──> (the same path)
#
# Everything runs on 127.0.0.1 on free ports, in a temporary directory, and is stopped (by
# PID) when the script ends. Exits non-zero when a reply does not arrive.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir="$root/build"

if [[ -t 1 ]]; then
  bold=$'\e[1m' red=$'\e[31m' reset=$'\e[0m'
else
  bold='' red='' reset=''
fi
heading() { printf '\n%s==> %s%s\n' "$bold" "$*" "$reset"; }
fail() { printf '%squickstart: %s%s\n' "$red" "$*" "$reset" >&2; }

# --- cleanup: stop what we started, by PID, newest first --------------------------------
pids=()
workdir=''
cleanup() {
  local status=$?
  set +e
  local i pid
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[i]}
    kill -0 "$pid" 2>/dev/null || continue
    kill -TERM "$pid" 2>/dev/null
    for _ in {1..50}; do # up to 5 s for a graceful stop
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [[ -n "$workdir" ]]; then
    if ((status != 0)); then
      for log in "$workdir"/*.log; do
        [[ -s "$log" ]] || continue
        printf '\n%s--- %s ---%s\n' "$bold" "$(basename "$log")" "$reset" >&2
        tail -n 40 "$log" >&2
      done
    fi
    rm -rf "$workdir"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- helpers ------------------------------------------------------------------------------
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Prints a free loopback TCP port (not one of those given as arguments).
free_port() {
  local port
  for _ in {1..50}; do
    if command -v python3 >/dev/null 2>&1; then
      port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    else
      port=$((20000 + RANDOM % 40000))
    fi
    if [[ " $* " != *" $port "* ]] && ! port_in_use "$port"; then
      echo "$port"
      return 0
    fi
  done
  fail "no free TCP port found on 127.0.0.1"
  return 1
}

# wait_for DESCRIPTION PID SECONDS COMMAND...: polls COMMAND every 0.1 s while PID lives.
wait_for() {
  local what=$1 pid=$2 seconds=$3
  shift 3
  local tries=$((seconds * 10)) i
  for ((i = 0; i < tries; i++)); do
    "$@" && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      fail "$what: the process exited"
      return 1
    fi
    sleep 0.1
  done
  fail "$what: not ready after ${seconds} s"
  return 1
}

# --- 1. dependencies and build --------------------------------------------------------
heading "Installing dependencies (Debian packages)"
"$root/scripts/deps.sh"

heading "Building homd, hom, hom-gateway and hom-demo-api ($build_dir)"
generator=()
[[ -f "$build_dir/CMakeCache.txt" ]] || generator=(-G Ninja)
cmake -S "$root" -B "$build_dir" "${generator[@]}" -DHOM_BUILD_DEMO=ON
cmake --build "$build_dir" --target homd hom hom-gateway hom-demo-api -j2

workdir=$(mktemp -d "${TMPDIR:-/tmp}/hom-quickstart.XXXXXX")

# --- 2. a private Mosquitto ---------------------------------------------------------------
mqtt_port=$(free_port)
heading "Starting a private Mosquitto on 127.0.0.1:$mqtt_port"
mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
cat >"$workdir/mosquitto.conf" <<EOF
listener $mqtt_port 127.0.0.1
allow_anonymous true
# Mosquitto 2.0.11 (Debian 12) mishandles the in-flight quota for QoS 2; 0 = unlimited.
max_inflight_messages 0
# Without it every QoS 1/2 exchange waits ~40 ms for delayed ACKs (Nagle).
set_tcp_nodelay true
persistence false
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
log_type subscribe
EOF
"$mosquitto_bin" -c "$workdir/mosquitto.conf" >"$workdir/mosquitto.log" 2>&1 &
pids+=($!)
wait_for "mosquitto" "${pids[-1]}" 10 port_in_use "$mqtt_port"
echo "mosquitto is running (pid ${pids[-1]})"

# --- 3. the demo API: the device's local REST API ----------------------------------------
api_port=$(free_port "$mqtt_port")
heading "Starting the demo API on 127.0.0.1:$api_port"
"$build_dir/hom-demo-api" "$api_port" >"$workdir/demo-api.log" 2>&1 &
pids+=($!)
wait_for "hom-demo-api" "${pids[-1]}" 10 port_in_use "$api_port"
echo "hom-demo-api is running (pid ${pids[-1]})"

# --- 4. homd ------------------------------------------------------------------------------
heading "Starting homd"
# Only the variables below: settings exported in this shell must not redirect the demo.
unset_args=()
for name in $(compgen -e); do
  case $name in
    MQTT_* | HTTP_* | GATEWAY_* | WORKERS | QUEUE_MAX | SHUTDOWN_GRACE_MS | LOG_LEVEL) unset_args+=(-u "$name") ;;
  esac
done
homd_env=(
  MQTT_HOST=127.0.0.1 MQTT_PORT="$mqtt_port" MQTT_TLS=off
  MQTT_TOPIC_START=v1 MQTT_TOPIC_ID=itsme
  HTTP_BASE_URL="http://127.0.0.1:$api_port/"
)
echo "env ${homd_env[*]} build/homd"
env "${unset_args[@]}" "${homd_env[@]}" "$build_dir/homd" >"$workdir/homd.log" 2>&1 &
pids+=($!)
homd_pid=${pids[-1]}
wait_for "homd" "$homd_pid" 20 grep -qs "subscribed to" "$workdir/homd.log"
grep "subscribed to" "$workdir/homd.log" | head -n 1

# --- 5. the two examples of the original HttpOverMqtt README, through hom -------------
hom_env=(MQTT_HOST=127.0.0.1 MQTT_PORT="$mqtt_port" MQTT_TLS=off MQTT_TOPIC_START=v1)
failed=0
# hom_call ARGS...: prints the command, then what hom printed; hom's exit status tells.
hom_call() {
  heading "hom $*"
  env "${unset_args[@]}" "${hom_env[@]}" "$build_dir/hom" --timeout 10s "$@" || {
    fail "hom $* failed (exit status $?)"
    failed=1
  }
}
hom_call get itsme gps/latitude
hom_call post itsme food/dessert -d '{"name":"tiramisu"}' --req-id 42 --json
hom_call devices

# --- 6. the same device through hom-gateway, with curl ---------------------------------
gateway_port=$(free_port "$mqtt_port" "$api_port")
heading "Starting hom-gateway on 127.0.0.1:$gateway_port"
# One token, allowed GET on every device; the file holds only its SHA-256.
token=quickstart-$RANDOM$RANDOM
printf '%s * GET * quickstart\n' "$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)" \
  >"$workdir/tokens"
gateway_env=(MQTT_HOST=127.0.0.1 MQTT_PORT="$mqtt_port" MQTT_TLS=off MQTT_TOPIC_START=v1
  GATEWAY_LISTEN="127.0.0.1:$gateway_port" GATEWAY_TOKENS_FILE="$workdir/tokens")
env "${unset_args[@]}" "${gateway_env[@]}" "$build_dir/hom-gateway" >"$workdir/gateway.log" 2>&1 &
pids+=($!)
gateway_healthy() { curl -sf "http://127.0.0.1:$gateway_port/_hom/health" >/dev/null; }
wait_for "hom-gateway" "${pids[-1]}" 20 gateway_healthy
curl_call() {
  heading "curl $*"
  curl -sS --max-time 10 "$@" || {
    fail "curl $* failed (exit status $?)"
    failed=1
  }
  echo
}
curl_call -i -H "Authorization: Bearer $token" "http://127.0.0.1:$gateway_port/itsme/gps/latitude"
heading "curl without a token"
curl -sS -i "http://127.0.0.1:$gateway_port/itsme/gps/latitude" | head -n 1

heading "What homd logged"
cat "$workdir/homd.log"
heading "What the demo API saw"
grep -v '^hom-demo-api: listening' "$workdir/demo-api.log" || true

if ((failed)); then
  fail "a reply did not arrive"
  exit 1
fi
heading "hom-gateway's access log"
grep -E ' -> [0-9]+ ' "$workdir/gateway.log" || true
heading "Done: the requests were answered through MQTT (hom and curl through hom-gateway). Stopping everything."
