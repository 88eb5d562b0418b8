#!/usr/bin/env bash
# One integration scenario with homd under valgrind memcheck: a private Mosquitto and the
# demo API on free loopback ports, requests of every kind through hom (JSON, text, 404,
# bridge errors, a malformed payload), then SIGTERM. Passes when valgrind reports no error
# and no definitely or indirectly lost memory.
#   tests/valgrind_test.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "valgrind_test: $*" >&2; tail -n 60 "$work/homd.log" >&2 || true; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_until() { # SECONDS COMMAND...
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do ((SECONDS < deadline)) || return 1; sleep 0.1; done
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

mqtt_port=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 0\nset_tcp_nodelay true\n' \
  "$mqtt_port" >"$work/mosquitto.conf"
"$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)
wait_until 10 port_open "$mqtt_port" || fail "mosquitto did not start"
api_port=$(free_port)
"$build/hom-demo-api" "$api_port" >"$work/api.log" 2>&1 &
pids+=($!)
wait_until 10 port_open "$api_port" || fail "demo API did not start"

env -i PATH="$PATH" MQTT_HOST=127.0.0.1 MQTT_PORT="$mqtt_port" MQTT_TLS=off MQTT_TOPIC_ID=vg \
  HTTP_BASE_URL="http://127.0.0.1:$api_port/" WORKERS=2 \
  valgrind --error-exitcode=3 --leak-check=full --show-leak-kinds=definite,indirect \
  --errors-for-leak-kinds=definite,indirect "$build/homd" >"$work/homd.log" 2>&1 &
homd_pid=$!
wait_until 60 grep -q "subscribed to" "$work/homd.log" || fail "homd did not subscribe"

hom() { MQTT_HOST=127.0.0.1 MQTT_PORT="$mqtt_port" MQTT_TLS=off "$build/hom" --timeout 20s "$@"; }
hom get vg gps/latitude | grep -q latitude || fail "GET"
hom post vg food/dessert -d '{"name":"tiramisu"}' | grep -q tiramisu || fail "POST"
hom -i get vg status >/dev/null || fail "GET -i"
code=0; hom get vg no/such/path >/dev/null 2>&1 || code=$?; ((code == 22)) || fail "404: exit $code"
code=0; hom get vg a/../b >/dev/null 2>&1 || code=$?; ((code == 22)) || fail "400: exit $code"
code=0; hom frobnicate vg x >/dev/null 2>&1 || code=$?; ((code == 22)) || fail "405: exit $code"
mosquitto_pub -p "$mqtt_port" -q 1 -t v1/req/vg/post/x -m '{"body": [1, 2' || fail "publish"
hom get vg gps/latitude >/dev/null || fail "still serving"

kill -TERM "$homd_pid"
status=0
wait "$homd_pid" || status=$?
grep -E "ERROR SUMMARY|definitely lost|indirectly lost" "$work/homd.log" || true
((status == 0)) || fail "homd under valgrind exited $status"
grep -q "ERROR SUMMARY: 0 errors" "$work/homd.log" || fail "valgrind found errors"
echo "valgrind_test: no errors, no leaks"
