#!/usr/bin/env bash
# The benchmark in one command (bench/README.md): builds the project (Release) if needed,
# starts a private Mosquitto, nginx and hom-echo on loopback ports, then measures homd against
# the echo limit, side by side, and prints Markdown tables. Stops everything it started, by PID.
#
# Environment: DURATION (s per cell, 10), REPEAT (runs per cell, the median is shown; 1),
# BUILD_DIR, HOMD_WORKERS (4), QOS_LIST ("0 1 2"), CONC_LIST ("1 16 64"), WORKERS_LIST
# ("1 2 4 8"), SLOW_DELAY_MS (50), BACKLOG_REQUESTS (10000), BACKLOG_S (5), BROKER_NODELAY
# (true).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-1}
BUILD_DIR=${BUILD_DIR:-$root/build-bench}
HOMD_WORKERS=${HOMD_WORKERS:-4}
HOMD_ENV=${HOMD_ENV:-}  # more VAR=value settings for every homd, e.g. to compare one
QOS_LIST=${QOS_LIST:-"0 1 2"}
CONC_LIST=${CONC_LIST:-"1 16 64"}
WORKERS_LIST=${WORKERS_LIST:-"1 2 4 8"}
SLOW_DELAY_MS=${SLOW_DELAY_MS:-50}
BACKLOG_REQUESTS=${BACKLOG_REQUESTS:-10000}
BACKLOG_S=${BACKLOG_S:-5}
BROKER_NODELAY=${BROKER_NODELAY:-true}

prog=run.sh
# shellcheck source=bench/lib.sh
source "$here/lib.sh"

find_servers
build homd hom-loadgen hom-echo hom-slow-api hom-http-floor hom-rss-floor
make_tmp

start_broker() {
  broker_port=$(free_port)
  {
    broker_conf "$broker_port" "$BROKER_NODELAY"
    echo "persistence false"
  } >"$tmp/mosquitto.conf"
  start_mosquitto "$tmp/mosquitto.conf" "$tmp/mosquitto.log" "$broker_port" ||
    die "mosquitto did not start: $(cat "$tmp/mosquitto.log")"
}

# Waits until the responder on topic id $1 answers a request correctly.
probe() {
  "$LOADGEN" --port "$broker_port" --id "$1" -q 1 -d 0 --probe 20 >/dev/null ||
    die "no reply from the responder on id $1"
}

start_echo() {
  "$ECHO" --port "$broker_port" --id bench-echo >"$tmp/echo.log" 2>&1 &
  echo_pid=$!
  pids+=("$echo_pid")
  probe bench-echo
}

# start_homd ID [VAR=value]...: homd in a clean environment (plus what systemd/homd.service
# sets: GNUTLS_NO_IMPLICIT_INIT); sets homd_pid.
start_homd() {
  local id=$1
  shift
  env -i PATH="$PATH" GNUTLS_NO_IMPLICIT_INIT=1 MQTT_HOST=127.0.0.1 MQTT_PORT="$broker_port" \
    MQTT_TLS=off MQTT_TOPIC_ID="$id" HTTP_BASE_URL="http://127.0.0.1:$api_port/" LOG_LEVEL=warn \
    WORKERS="$HOMD_WORKERS" ${HOMD_ENV:-} "$@" "$HOMD" >"$tmp/homd-$id.log" 2>&1 &
  homd_pid=$!
  pids+=("$homd_pid")
  probe "$id"
}

# load ID QOS C [loadgen options]...: one JSON line.
load() {
  local id=$1 qos=$2 c=$3
  shift 3
  "$LOADGEN" --port "$broker_port" --id "$id" -q "$qos" -c "$c" -d "$DURATION" "$@" \
    2>>"$tmp/loadgen.err" || die "hom-loadgen failed on id $id: $(tail -3 "$tmp/loadgen.err")"
}

# jget KEY JSON: a number from the loadgen's flat JSON line.
jget() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" <<<"$2"; }

tck=$(getconf CLK_TCK)
# cpu_per_1000 TICKS REQUESTS: CPU seconds per 1000 requests.
cpu_per_1000() { awk -v t="$1" -v n="$2" -v h="$tck" 'BEGIN {printf "%.3f", (n > 0 ? t / h / n * 1000 : 0)}'; }
# per_request COUNT REQUESTS
per_request() { awk -v c="$1" -v n="$2" 'BEGIN {printf "%.1f", (n > 0 ? c / n : 0)}'; }

# measure PID ID QOS C [loadgen options]...: REPEAT runs against the responder PID on topic
# id ID. Sets m_json (the run with the median throughput), m_bad (errors/timeouts/
# duplicates/lost summed over the runs), m_done (replies), m_cpu (CPU s per 1000 replies),
# m_api_cpu (the same for the nginx worker), m_cs (context switches per reply), m_rss,
# m_hwm, m_threads (after the last run).
measure() {
  local pid=$1 id=$2 qos=$3 c=$4 r cpu0 cpu1 cs0 cs1 api0 api1 cpu=0 cs=0 api=0 j runs=()
  shift 4
  for ((r = 0; r < REPEAT; r++)); do
    read -r _ _ _ cpu0 cs0 <<<"$(sample "$pid")"
    read -r _ _ _ api0 _ <<<"$(sample "$api_pid")"
    j=$(load "$id" "$qos" "$c" "$@")
    read -r m_rss m_hwm m_threads cpu1 cs1 <<<"$(sample "$pid")"
    read -r _ _ _ api1 _ <<<"$(sample "$api_pid")"
    cpu=$((cpu + cpu1 - cpu0))
    cs=$((cs + cs1 - cs0))
    api=$((api + api1 - api0))
    runs+=("$(jget throughput "$j") $j")
  done
  m_json=$(printf '%s\n' "${runs[@]}" | sort -n -k1,1 | sed -n "$(((REPEAT + 1) / 2))p" | cut -d' ' -f2-)
  local sum_ok=0 sum_err=0 sum_to=0 sum_dup=0 sum_lost=0 line
  for line in "${runs[@]}"; do
    j=${line#* }
    sum_ok=$((sum_ok + $(jget ok "$j")))
    sum_err=$((sum_err + $(jget errors "$j")))
    sum_to=$((sum_to + $(jget timeouts "$j")))
    sum_dup=$((sum_dup + $(jget duplicates "$j")))
    sum_lost=$((sum_lost + $(jget lost "$j")))
  done
  m_done=$((sum_ok + sum_err))
  m_bad="$sum_err/$sum_to/$sum_dup/$sum_lost"
  m_cpu=$(cpu_per_1000 "$cpu" "$m_done")
  m_api_cpu=$(cpu_per_1000 "$api" "$m_done")
  m_cs=$(per_request "$cs" "$m_done")
}

# --- run ---------------------------------------------------------------------------------
log "hom bench: DURATION=${DURATION}s per cell, REPEAT=$REPEAT; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
log "$("$HOMD" --version), $("$MOSQUITTO" -h 2>&1 | head -1), $("$NGINX" -v 2>&1)"
load_before=$(cut -d' ' -f1 /proc/loadavg)
start_broker
start_nginx ""  # no /slow/
start_echo

# The HTTP calls alone, as homd's workers make them: at one thread the latency any bridge adds
# to a c=1 round trip; at WORKERS threads the client's CPU per call (bench/README.md).
http_floor() {
  "$HTTP_FLOOR" --base "http://127.0.0.1:$api_port/" -c "$1" -d "$DURATION" 2>>"$tmp/loadgen.err" ||
    die "hom-http-floor failed: $(tail -3 "$tmp/loadgen.err")"
}
log "the HTTP calls alone (hom-http-floor)"
read -r _ _ _ api0 _ <<<"$(sample "$api_pid")"
floor1_json=$(http_floor 1)
read -r _ _ _ api1 _ <<<"$(sample "$api_pid")"
floorw_json=$(http_floor "$HOMD_WORKERS")
floor_p50=$(awk -v v="$(jget p50_us "$floor1_json")" 'BEGIN {printf "%.0f", v}')
floor_cpu=$(awk -v v="$(jget cpu_us_per_request "$floorw_json")" 'BEGIN {printf "%.1f", v}')
# nginx's CPU over the one-thread run, warm-up (0.5 s) included, per call.
floor_api=$(awk -v t=$((api1 - api0)) -v h="$tck" -v r="$(jget throughput "$floor1_json")" \
  -v d="$DURATION" 'BEGIN {n = r * (d + 0.5); printf "%.1f", (n > 0 ? t / h / n * 1e6 : 0)}')
cores=$(nproc)

median=""
((REPEAT > 1)) && median=", median of $REPEAT runs"
min_ratio=1000
min_of_bound=1000
max_dp50_c1=-1000000
max_cpu=0
bad_cells=0
idle_rss=""
peak_hwm=0
rows=()
for qos in $QOS_LIST; do
  # Replies at the request's QoS, as hom-echo does, so both do the same MQTT work.
  start_homd "bench-q$qos" MQTT_RESPONSE_QOS="$qos"
  if [[ -z $idle_rss ]]; then
    sleep 1
    read -r idle_rss _ idle_threads _ _ <<<"$(sample "$homd_pid")"
  fi
  for c in $CONC_LIST; do
    log "cell QoS $qos, c=$c"
    measure "$echo_pid" bench-echo "$qos" "$c"
    echo_json=$m_json e_bad=$m_bad ecpu=$m_cpu ecs=$m_cs
    measure "$homd_pid" "bench-q$qos" "$qos" "$c"
    homd_json=$m_json h_bad=$m_bad cpu=$m_cpu hcs=$m_cs api_cpu=$m_api_cpu
    e_tp=$(jget throughput "$echo_json")
    h_tp=$(jget throughput "$homd_json")
    e_p50=$(jget p50_us "$echo_json")
    h_p50=$(jget p50_us "$homd_json")
    ratio=$(awk -v h="$h_tp" -v e="$e_tp" 'BEGIN {printf "%.0f", (e > 0 ? 100 * h / e : 0)}')
    # The best a bridge that makes these HTTP calls could do (bench/README.md, "What limits
    # homd"): at c=1 the echo's round trip plus one call; above, the cores shared by the echo's
    # work plus the calls' CPU (curl's side and nginx's).
    if ((c == 1)); then
      bound=$(awk -v e="$e_tp" -v p="$e_p50" -v f="$floor_p50" 'BEGIN {printf "%.1f", e * p / (p + f)}')
    else
      bound=$(awk -v e="$e_tp" -v k="$cores" -v x="$floor_cpu" -v a="$api_cpu" \
        'BEGIN {printf "%.1f", e / (1 + e * (x + a * 1000) / 1e6 / k)}')
    fi
    bound_ratio=$(awk -v b="$bound" -v e="$e_tp" 'BEGIN {printf "%.0f", (e > 0 ? 100 * b / e : 0)}')
    of_bound=$(awk -v h="$h_tp" -v b="$bound" 'BEGIN {printf "%.0f", (b > 0 ? 100 * h / b : 0)}')
    dp50=$((h_p50 - e_p50))
    rows+=("| QoS $qos, c=$c | $e_tp | $h_tp | $ratio % | $bound_ratio % | $of_bound % | $e_p50 | $h_p50 | $dp50 | $(jget p99_us "$homd_json") | $h_bad | $e_bad | $ecpu | $cpu | $api_cpu | $ecs | $hcs | $(mb "$m_rss") | $m_threads |")
    ((ratio < min_ratio)) && min_ratio=$ratio
    ((of_bound < min_of_bound)) && min_of_bound=$of_bound
    ((c == 1 && dp50 > max_dp50_c1)) && max_dp50_c1=$dp50
    max_cpu=$(awk -v a="$max_cpu" -v b="$cpu" 'BEGIN {print ((b > a) ? b : a)}')
    [[ $h_bad == 0/0/0/0 ]] || bad_cells=$((bad_cells + 1))
  done
  read -r _ hwm _ _ _ <<<"$(sample "$homd_pid")"
  ((hwm > peak_hwm)) && peak_hwm=$hwm
  stop_pid "$homd_pid"
done

echo
echo "## homd against the MQTT echo limit (WORKERS=$HOMD_WORKERS, ${DURATION} s per cell$median)"
echo
echo "| cell | echo req/s | homd req/s | homd ÷ echo | bound ÷ echo | homd ÷ bound | echo p50 µs | homd p50 µs | Δp50 µs | homd p99 µs | homd err/to/dup/lost | echo err/to/dup/lost | echo CPU s/1000 | homd CPU s/1000 | nginx CPU s/1000 | echo cs/req | homd cs/req | homd RSS MB | homd threads |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | :---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
echo
echo "The HTTP calls alone (hom-http-floor, nginx, no MQTT): one thread p50 $floor_p50 µs" \
  "($(printf %.0f "$(jget throughput "$floor1_json")") calls/s, nginx $floor_api µs CPU per call);" \
  "$HOMD_WORKERS threads $(printf %.0f "$(jget throughput "$floorw_json")") calls/s, $floor_cpu µs client CPU per call." \
  "bound: the best a bridge making these calls could reach ($cores cores)."
echo
read -r echo_rss echo_hwm _ _ _ <<<"$(sample "$echo_pid")"
# What homd's libraries alone take once loaded and initialised (hom-rss-floor), run as homd is.
rss_floor=$(env -i GNUTLS_NO_IMPLICIT_INIT=1 "$RSS_FLOOR" | sed -n 's/^after creating a Paho client: VmRSS \([0-9]*\) kB/\1/p')
echo "homd idle RSS: $(mb "$idle_rss") MB ($idle_threads threads, after connecting and one probe request); peak RSS (VmHWM) over all cells: $(mb "$peak_hwm") MB. For scale, hom-echo: $(mb "$echo_rss") MB, peak $(mb "$echo_hwm") MB; homd's libraries alone, loaded and initialised (hom-rss-floor): $(mb "$rss_floor") MB."

# --- scaling with WORKERS ------------------------------------------------------------------
srows=()
for w in $WORKERS_LIST; do
  log "scaling WORKERS=$w"
  start_homd "bench-w$w" WORKERS="$w" MQTT_RESPONSE_QOS=1
  measure "$homd_pid" "bench-w$w" 1 64
  srows+=("| $w | $(jget throughput "$m_json") | $(jget p50_us "$m_json") | $(jget p99_us "$m_json") | $m_bad | $m_cpu | $m_cs | $(mb "$m_rss") | $(mb "$m_hwm") | $m_threads |")
  stop_pid "$homd_pid"
done
echo
echo "## Scaling with WORKERS (nginx, QoS 1, c=64$median)"
echo
echo "| WORKERS | homd req/s | p50 µs | p99 µs | err/to/dup/lost | CPU s/1000 | cs/req | RSS MB | peak RSS MB | threads |"
echo "| ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${srows[@]}"

# --- slow API --------------------------------------------------------------------------------
start_slow_api "$SLOW_DELAY_MS"
api_port=$slow_port  # homd started from here on calls the slow API
ideal=$(awk -v d="$SLOW_DELAY_MS" 'BEGIN {printf "%.0f", 64 / (d / 1000)}')
echo
echo "## Slow API (each call ${SLOW_DELAY_MS} ms, WORKERS=64, QoS 1, c=64; ideal 64 / ${SLOW_DELAY_MS} ms = $ideal req/s)"
echo
log "slow API"
start_homd bench-slow WORKERS=64 MQTT_RESPONSE_QOS=1
measure "$homd_pid" bench-slow 1 64 -t 10
tp=$(jget throughput "$m_json")
echo "| homd req/s | of ideal | p50 µs | p99 µs | err/to/dup/lost | CPU s/1000 | RSS MB | peak RSS MB | threads |"
echo "| ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: | ---: |"
echo "| $tp | $(awk -v t="$tp" -v i="$ideal" 'BEGIN {printf "%.0f %%", 100 * t / i}') | $(jget p50_us "$m_json") | $(jget p99_us "$m_json") | $m_bad | $m_cpu | $(mb "$m_rss") | $(mb "$m_hwm") | $m_threads |"
stop_pid "$homd_pid"

# --- backlog ---------------------------------------------------------------------------------
echo
echo "## Backlog ($BACKLOG_REQUESTS requests published at once, QoS 1, WORKERS=1, QUEUE_MAX=$BACKLOG_REQUESTS, slow API, watched for ${BACKLOG_S} s)"
echo
log "backlog"
start_homd bench-backlog WORKERS=1 QUEUE_MAX="$BACKLOG_REQUESTS" SHUTDOWN_GRACE_MS=1000 \
  MQTT_RESPONSE_QOS=1
read -r rss0 _ _ _ _ <<<"$(sample "$homd_pid")"
"$LOADGEN" --port "$broker_port" --id bench-backlog -q 1 --burst "$BACKLOG_REQUESTS" \
  -d "$BACKLOG_S" -t 600 >"$tmp/backlog.json" 2>>"$tmp/loadgen.err" &
burst_pid=$!
pids+=("$burst_pid")
max_rss=$rss0
while alive "$burst_pid"; do
  read -r rss _ _ _ _ <<<"$(sample "$homd_pid")"
  ((rss > max_rss)) && max_rss=$rss
  sleep 0.2
done
stop_pid "$burst_pid"
read -r rss hwm threads _ _ <<<"$(sample "$homd_pid")"
j=$(<"$tmp/backlog.json")
echo "| RSS before MB | max RSS while queued MB | peak RSS MB | answered in ${BACKLOG_S} s | refused (errors) | still queued | threads |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
echo "| $(mb "$rss0") | $(mb "$max_rss") | $(mb "$hwm") | $(jget ok "$j") | $(jget errors "$j") | $(jget pending "$j") | $threads |"
stop_pid "$homd_pid"

# --- targets -----------------------------------------------------------------------------------
echo
echo "## Targets (issue: homd ÷ echo ≥ 70 %, Δp50 at c=1 ≤ 150 µs, idle RSS ≤ 6 MB, peak ≤ 16 MB, CPU ≤ 0.1 s/1000, no errors)"
echo
yes_no() { if eval "$1"; then echo met; else echo "NOT met"; fi; }
echo "- throughput ≥ 70 % of the echo limit in every cell: $(yes_no "((min_ratio >= 70))") (lowest $min_ratio %; lowest homd ÷ bound $min_of_bound %)"
echo "- p50 at c=1 within 150 µs of the echo: $(yes_no "((max_dp50_c1 <= 150))") (largest Δp50 $max_dp50_c1 µs)"
echo "- idle RSS ≤ 6 MB: $(yes_no "((idle_rss <= 6144))") ($(mb "$idle_rss") MB; the libraries alone $(mb "$rss_floor") MB)"
echo "- peak RSS ≤ 16 MB: $(yes_no "((peak_hwm <= 16384))") ($(mb "$peak_hwm") MB)"
echo "- CPU ≤ 0.1 s per 1000 requests: $(yes_no "awk -v c=$max_cpu 'BEGIN {exit !(c <= 0.1)}'") (highest $max_cpu s)"
echo "- no errors, timeouts, duplicates or lost replies: $(yes_no "((bad_cells == 0))") ($bad_cells cells with some)"
echo
echo "Machine: $(nproc) cores; 1-minute load average $load_before before the run, $(cut -d' ' -f1 /proc/loadavg) after (the benchmark itself adds about 2)."
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -s $tmp/loadgen.err ]]; then
  log "loadgen notes:"
  sort "$tmp/loadgen.err" | uniq -c | head -20 >&2
fi
