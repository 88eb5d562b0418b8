#!/usr/bin/env bash
# hom-gateway against its limits, in one run (bench/README.md, "The gateway"): the same GET
# served by nginx directly (the HTTP limit), through homd alone (hom-loadgen over MQTT: the
# bridge limit) and through hom-gateway (wrk -> gateway -> MQTT -> homd -> nginx), at each
# concurrency; then WAITING requests held by a device that never answers, with the gateway's
# memory and threads while they wait. Prints Markdown; stops everything it started, by PID.
#
# Environment: DURATION (s per cell, 5), CONC_LIST ("1 64 1000"), QOS (the gateway's QoS 2),
# HOMD_WORKERS (4), GATEWAY_LOG_LEVEL (warn: no access log), WAITING (10000), BUILD_DIR.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
DURATION=${DURATION:-5}
CONC_LIST=${CONC_LIST:-"1 64 1000"}
QOS=${QOS:-2}
HOMD_WORKERS=${HOMD_WORKERS:-4}
GATEWAY_LOG_LEVEL=${GATEWAY_LOG_LEVEL:-warn}
WAITING=${WAITING:-10000}
BUILD_DIR=${BUILD_DIR:-$root/build-bench}
DEVICE=bench-gw-dev
TOKEN=bench-token

prog=gateway.sh
# shellcheck source=bench/lib.sh disable=SC2034,SC2154  # variables shared with lib.sh
source "$here/lib.sh"

find_servers
WRK=$(find_tool wrk)
[[ -n $WRK ]] || die "wrk not found; run bench/deps.sh"
CURL=$(find_tool curl)
[[ -n $CURL ]] || die "curl not found"
build homd hom-gateway hom-loadgen
GATEWAY=$BUILD_DIR/hom-gateway
# WAITING connections in wrk and in the gateway, each process on its own.
need_fds=$((WAITING + 1024))
if (($(ulimit -n) < need_fds)); then
  ulimit -n "$need_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
(($(ulimit -n) >= need_fds)) ||
  die "ulimit -n is $(ulimit -n), $need_fds needed for WAITING=$WAITING (raise the hard limit)"
make_tmp

tck=$(getconf CLK_TCK)
cpu_of() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# us_per_req TICKS REQUESTS
us_per_req() { awk -v t="$1" -v n="$2" -v h="$tck" 'BEGIN {printf "%.1f", (n > 0 ? t / h / n * 1e6 : 0)}'; }
per_req() { awk -v c="$1" -v n="$2" 'BEGIN {printf "%.1f", (n > 0 ? c / n : 0)}'; }
jget() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" <<<"$2"; }

# --- the processes -------------------------------------------------------------------------
broker_port=$(free_port)
{
  broker_conf "$broker_port" true
  echo "persistence false"
} >"$tmp/mosquitto.conf"
start_mosquitto "$tmp/mosquitto.conf" "$tmp/mosquitto.log" "$broker_port" ||
  die "mosquitto did not start: $(cat "$tmp/mosquitto.log")"
start_nginx ""
env -i PATH="$PATH" GNUTLS_NO_IMPLICIT_INIT=1 MQTT_HOST=127.0.0.1 MQTT_PORT="$broker_port" \
  MQTT_TLS=off MQTT_TOPIC_ID="$DEVICE" HTTP_BASE_URL="http://127.0.0.1:$api_port/" \
  LOG_LEVEL=warn WORKERS="$HOMD_WORKERS" MQTT_RESPONSE_QOS="$QOS" "$HOMD" >"$tmp/homd.log" 2>&1 &
homd_pid=$!
pids+=("$homd_pid")
"$LOADGEN" --port "$broker_port" --id "$DEVICE" -q 1 -d 0 --probe 20 >/dev/null ||
  die "homd does not answer: $(tail -5 "$tmp/homd.log")"

echo "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1) * GET * bench" >"$tmp/tokens"
# start_gateway NAME [VAR=value]...: a gateway on a free port, ready when /_hom/health says
# so; sets gw_pid and gw_port.
start_gateway() {
  local name=$1 i
  shift
  gw_port=$(free_port)
  env -i PATH="$PATH" MQTT_HOST=127.0.0.1 MQTT_PORT="$broker_port" MQTT_TLS=off \
    GATEWAY_LISTEN="127.0.0.1:$gw_port" GATEWAY_TOKENS_FILE="$tmp/tokens" \
    LOG_LEVEL="$GATEWAY_LOG_LEVEL" "$@" "$GATEWAY" >"$tmp/$name.log" 2>&1 &
  gw_pid=$!
  pids+=("$gw_pid")
  for ((i = 0; i < 200; i++)); do
    [[ $("$CURL" -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$gw_port/_hom/health") == 200 ]] &&
      return 0
    alive "$gw_pid" || die "hom-gateway exited: $(cat "$tmp/$name.log")"
    sleep 0.1
  done
  die "hom-gateway not healthy in 20 s: $(cat "$tmp/$name.log")"
}
start_gateway gateway
gw_url="http://127.0.0.1:$gw_port/$DEVICE/gps/latitude"
api_url="http://127.0.0.1:$api_port/gps/latitude"
# The first request to a device also subscribes (the gateway waits for the SUBACK): done here,
# outside the measured cells. The body must be the API's, byte for byte.
"$CURL" -s -H "Authorization: Bearer $TOKEN" -o "$tmp/probe.body" "$gw_url"
cmp -s "$tmp/probe.body" "$tmp/nginx/www/latitude.json" ||
  die "the gateway's body differs from the API's: $(cat "$tmp/probe.body")"

# --- measuring -----------------------------------------------------------------------------
# us VALUE_WITH_UNIT: wrk's "123.45us", "1.20ms", "2.00s" in µs.
us() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "ms") n *= 1000; else if (u == "s") n *= 1e6; else if (u == "m") n *= 6e7
    printf "%.0f", n }'
}

# cell_start / cell_end PIDS...: CPU ticks of the servers over a cell.
cs_of() { cat "/proc/$1/task/"*/status 2>/dev/null | awk '/ctxt_switches:/ {n += $2} END {print n + 0}'; }
cell_start() { c0=() s0=(); for p in "$@"; do c0+=("$(cpu_of "$p")"); s0+=("$(cs_of "$p")"); done; }
cell_end() {
  local i=0 p
  c1=() s1=()
  for p in "$@"; do
    c1+=($(($(cpu_of "$p") - c0[i])))
    s1+=($(($(cs_of "$p") - s0[i])))
    i=$((i + 1))
  done
}

# run_wrk URL C [wrk options]: sets w_rps w_p50 w_p99 w_n w_err w_client_ticks.
run_wrk() {
  local url=$1 c=$2 out
  shift 2
  local t0 t1
  t0=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)
  out=$("$WRK" -t 1 -c "$c" -d "${DURATION}s" --timeout 10s --latency "$@" "$url" 2>&1) ||
    die "wrk failed: $out"
  t1=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)
  w_client_ticks=$((t1 - t0))  # the children's CPU (cutime + cstime): wrk's
  w_rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
  w_p50=$(us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  w_p99=$(us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  w_n=$(awk '/requests in/ {print $1}' <<<"$out")
  local sock non2xx
  sock=$(awk -F'[ ,]+' '/Socket errors/ {print $4 + $6 + $8 + $10}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  w_err=$((${sock:-0} + ${non2xx:-0}))
  printf '%s\n' "$out" >>"$tmp/wrk.log"
}

rows=()
declare -A rps p50 err
t_start=() gw_threads_cpu=()
for c in $CONC_LIST; do
  log "c=$c: nginx directly"
  cell_start "$api_pid"
  run_wrk "$api_url" "$c"
  cell_end "$api_pid"
  rps[nginx$c]=$w_rps p50[nginx$c]=$w_p50 err[nginx$c]=$w_err
  rows+=("| wrk → nginx | $c | $w_rps | $w_p50 | $w_p99 | $w_err | – | – | – | $(us_per_req "${c1[0]}" "$w_n") | $(us_per_req "$w_client_ticks" "$w_n") | – | – |")

  log "c=$c: hom-loadgen → homd (the bridge alone)"
  cell_start "$homd_pid" "$broker_pid" "$api_pid"
  t0=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)
  j=$("$LOADGEN" --port "$broker_port" --id "$DEVICE" -q "$QOS" -c "$c" -d "$DURATION" --mix get \
    -t 10 2>>"$tmp/loadgen.err") || die "hom-loadgen failed: $(tail -3 "$tmp/loadgen.err")"
  t1=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)
  cell_end "$homd_pid" "$broker_pid" "$api_pid"
  n=$(($(jget ok "$j") + $(jget errors "$j")))
  bad=$(($(jget errors "$j") + $(jget timeouts "$j") + $(jget duplicates "$j") + $(jget lost "$j")))
  tp=$(printf %.0f "$(jget throughput "$j")")
  rps[bridge$c]=$tp p50[bridge$c]=$(jget p50_us "$j") err[bridge$c]=$bad
  rows+=("| hom-loadgen → homd → nginx | $c | $tp | $(jget p50_us "$j") | $(jget p99_us "$j") | $bad | – | $(us_per_req "${c1[0]}" "$n") | $(us_per_req "${c1[1]}" "$n") | $(us_per_req "${c1[2]}" "$n") | $(us_per_req $((t1 - t0)) "$n") | – | $(per_req "${s1[0]}" "$n") |")

  log "c=$c: wrk → hom-gateway → homd"
  cell_start "$gw_pid" "$homd_pid" "$broker_pid" "$api_pid"
  # Per thread too: which of the gateway's threads the CPU goes to.
  for f in /proc/"$gw_pid"/task/*/stat; do
    tid=${f#/proc/"$gw_pid"/task/}
    tid=${tid%/stat}
    t_start[tid]=$(sed 's/.*) //' "$f" | awk '{print $12 + $13}')
  done
  run_wrk "$gw_url" "$c" -H "Authorization: Bearer $TOKEN"
  cell_end "$gw_pid" "$homd_pid" "$broker_pid" "$api_pid"
  threads_cpu=""
  for f in /proc/"$gw_pid"/task/*/stat; do
    tid=${f#/proc/"$gw_pid"/task/}
    tid=${tid%/stat}
    now=$(sed 's/.*) //' "$f" | awk '{print $12 + $13}')
    d=$((now - ${t_start[$tid]:-0}))
    ((d > 0)) && threads_cpu+="$(awk -v d="$d" -v h="$tck" -v s="$DURATION" 'BEGIN {printf "%.0f", 100 * d / h / s}') $(cat "/proc/$gw_pid/task/$tid/comm")"$'\n'
  done
  gw_threads_cpu[c]=$(sort -rn <<<"$threads_cpu" | grep . | awk '{printf "%s%s %s %%", (NR > 1 ? ", " : ""), $2, $1}')
  rps[gateway$c]=$w_rps p50[gateway$c]=$w_p50 err[gateway$c]=$w_err
  rows+=("| wrk → hom-gateway → homd → nginx | $c | $w_rps | $w_p50 | $w_p99 | $w_err | $(us_per_req "${c1[0]}" "$w_n") | $(us_per_req "${c1[1]}" "$w_n") | $(us_per_req "${c1[2]}" "$w_n") | $(us_per_req "${c1[3]}" "$w_n") | $(us_per_req "$w_client_ticks" "$w_n") | $(per_req "${s1[0]}" "$w_n") | $(per_req "${s1[1]}" "$w_n") |")
done
read -r gw_rss gw_hwm gw_threads _ _ <<<"$(sample "$gw_pid")"
stop_pid "$gw_pid"

echo "## hom-gateway against its limits (GET /gps/latitude, QoS $QOS, homd WORKERS=$HOMD_WORKERS, ${DURATION} s per cell)"
echo
echo "| path | c | req/s | p50 µs | p99 µs | errors | gateway CPU µs/req | homd CPU µs/req | mosquitto CPU µs/req | nginx CPU µs/req | client CPU µs/req | gateway cs/req | homd cs/req |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
echo
echo "CPU: utime + stime from /proc over the cell ÷ requests answered (the client's: wrk's or hom-loadgen's own). cs: context switches, voluntary and involuntary, summed over the threads."
echo "errors: wrk's socket errors and non-2xx responses; hom-loadgen's wrong replies, timeouts, duplicates and lost replies."
echo "The gateway's threads' CPU in its cells (% of one core, busiest first):"
for c in $CONC_LIST; do echo "- c=$c: ${gw_threads_cpu[$c]}"; done
echo "Gateway after the matrix: RSS $(mb "$gw_rss") MB, peak $(mb "$gw_hwm") MB, $gw_threads threads."

# --- WAITING requests held ----------------------------------------------------------------------
# A device nobody serves: each request waits for its (long) timeout. wrk keeps one request
# per connection in flight, so -c WAITING holds WAITING requests.
log "$WAITING requests waiting"
start_gateway gateway-wait GATEWAY_TIMEOUT_MS=600000 GATEWAY_MAX_INFLIGHT="$WAITING" \
  GATEWAY_MAX_CONNECTIONS=$((WAITING + 100)) SHUTDOWN_GRACE_MS=1000
metric() {
  "$CURL" -s --max-time 10 "http://127.0.0.1:$gw_port/_hom/metrics" | awk -v m="$1" '$1 == m {print $2}'
}
"$CURL" -s -o /dev/null -H "Authorization: Bearer $TOKEN" -H "Hom-Timeout: 100ms" \
  "http://127.0.0.1:$gw_port/bench-silent/x"  # subscribes, outside the measurement
read -r rss0 _ _ _ _ <<<"$(sample "$gw_pid")"
wait_start=$(date +%s.%N)
"$WRK" -t 2 -c "$WAITING" -d 600s --timeout 600s -H "Authorization: Bearer $TOKEN" \
  "http://127.0.0.1:$gw_port/bench-silent/x" >"$tmp/wrk-wait.log" 2>&1 &
wrk_pid=$!
pids+=("$wrk_pid")
inflight=0
for ((i = 0; i < 600; i++)); do
  inflight=$(metric hom_gateway_in_flight)
  ((${inflight:-0} >= WAITING)) && break
  alive "$wrk_pid" || die "wrk exited: $(cat "$tmp/wrk-wait.log")"
  sleep 0.1
done
all_waiting_s=$(awk -v a="$wait_start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
conns=$(metric hom_gateway_connections)
read -r rss hwm threads _ _ <<<"$(sample "$gw_pid")"
fds=$(find "/proc/$gw_pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
stop_pid "$wrk_pid"
stop_pid "$gw_pid"
per_req=$(awk -v a="$rss0" -v b="$rss" -v n="${inflight:-0}" 'BEGIN {printf "%.1f", (n > 0 ? (b - a) * 1024 / n : 0)}')
echo
echo "## $WAITING requests waiting for a device that does not answer (GATEWAY_TIMEOUT_MS=600000)"
echo
echo "| waiting (in_flight) | connections | all waiting after s | RSS before MB | RSS waiting MB | peak RSS MB | bytes per waiting request | threads | fds |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
echo "| ${inflight:-0} | ${conns:-0} | $all_waiting_s | $(mb "$rss0") | $(mb "$rss") | $(mb "$hwm") | $per_req | $threads | $fds |"

# --- targets -------------------------------------------------------------------------------------
yes_no() { if awk "BEGIN {exit !($1)}"; then echo met; else echo "NOT met"; fi; }
echo
echo "## Targets"
echo
if [[ -n ${rps[gateway64]:-} ]]; then
  ratio=$(awk -v g="${rps[gateway64]}" -v b="${rps[bridge64]}" 'BEGIN {printf "%.0f", 100 * g / b}')
  echo "- gateway ≥ 70 % of the bridge alone at c=64: $(yes_no "$ratio >= 70") ($ratio %: ${rps[gateway64]} vs ${rps[bridge64]} req/s)"
fi
if [[ -n ${p50[gateway1]:-} ]]; then
  dp=$((p50[gateway1] - p50[bridge1]))
  echo "- gateway p50 at c=1 within 200 µs of the bridge alone: $(yes_no "$dp <= 200") (Δ $dp µs: ${p50[gateway1]} vs ${p50[bridge1]} µs)"
fi
errs=0
for k in "${!err[@]}"; do errs=$((errs + err[$k])); done
echo "- zero errors: $(yes_no "$errs == 0") ($errs)"
echo "- $WAITING waiting in ≤ 64 MB RSS: $(yes_no "${inflight:-0} >= $WAITING && $rss <= 65536") ($(mb "$rss") MB with ${inflight:-0} waiting)"
echo "- $WAITING waiting in ≤ 16 threads: $(yes_no "$threads <= 16") ($threads)"
echo
echo "Machine: $(nproc) cores, 1-minute load average $(cut -d' ' -f1 /proc/loadavg) at the end; $("$NGINX" -v 2>&1 | sed 's/.*: //'), $("$WRK" -v 2>&1 | head -1 | cut -d' ' -f1-2)."
