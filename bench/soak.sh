#!/usr/bin/env bash
# The soak benchmark in one command (bench/README.md, "Soak"): builds the project (Release)
# if needed, starts a private Mosquitto with persistence, nginx and homd on loopback ports,
# runs a steady mixed load through homd for SOAK_DURATION seconds while restarting the broker
# every RESTART_EVERY seconds, samples homd's RSS, open fds and threads every SAMPLE_EVERY
# seconds, and prints a summary. Exits non-zero when a request was lost, answered wrongly or
# twice at QoS 2, or when RSS, fds or threads did not stay flat. Stops everything it started,
# by PID.
#
# Environment: SOAK_DURATION (600), RESTART_EVERY (60; 0: never), SAMPLE_EVERY (5),
# SOAK_RATE (200 req/s), SOAK_CONC (8), SOAK_QOS ("1,2"), SOAK_MIX ("get,post,bin,slow"),
# SOAK_SLOW_MS (50: the delay of "slow"), SOAK_GRACE (60), SOAK_WARMUP
# (60, at most a quarter of SOAK_DURATION), HOMD_WORKERS (4), HOMD_LOG_LEVEL (warn),
# BROKER_NODELAY (true), BROKER_PERSISTENCE (true; false shows what the soak catches without
# it), BUILD_DIR, KEEP_LOGS (keep the temporary directory; it is always kept when the soak
# fails).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
prog=soak.sh
SOAK_DURATION=${SOAK_DURATION:-600}
RESTART_EVERY=${RESTART_EVERY:-60}
SAMPLE_EVERY=${SAMPLE_EVERY:-5}
SOAK_RATE=${SOAK_RATE:-200}
SOAK_CONC=${SOAK_CONC:-8}
SOAK_QOS=${SOAK_QOS:-1,2}
SOAK_MIX=${SOAK_MIX:-get,post,bin,slow}
SOAK_SLOW_MS=${SOAK_SLOW_MS:-50}
SOAK_GRACE=${SOAK_GRACE:-60}
SOAK_WARMUP=${SOAK_WARMUP:-$((SOAK_DURATION / 4 < 60 ? SOAK_DURATION / 4 : 60))}
HOMD_WORKERS=${HOMD_WORKERS:-4}
HOMD_LOG_LEVEL=${HOMD_LOG_LEVEL:-warn}
BROKER_NODELAY=${BROKER_NODELAY:-true}
BROKER_PERSISTENCE=${BROKER_PERSISTENCE:-true}
BUILD_DIR=${BUILD_DIR:-$root/build-bench}
KEEP_LOGS=${KEEP_LOGS:-}

# shellcheck source=bench/lib.sh
source "$here/lib.sh"

for v in SOAK_DURATION RESTART_EVERY SAMPLE_EVERY SOAK_CONC SOAK_GRACE SOAK_WARMUP SOAK_SLOW_MS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number of seconds (or clients)"
done
[[ $BROKER_PERSISTENCE =~ ^(true|false)$ ]] || die "BROKER_PERSISTENCE must be true or false"
((SOAK_DURATION >= 10)) || die "SOAK_DURATION must be at least 10 s"
((SAMPLE_EVERY >= 1)) || die "SAMPLE_EVERY must be at least 1 s"

find_servers
build homd hom-loadgen hom-slow-api
make_tmp
[[ -n $KEEP_LOGS ]] && keep_tmp=1

# Time since the start of the load, in milliseconds (EPOCHREALTIME: bash 5).
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }

# --- broker: persistent, restarted on the same port ------------------------------------------
broker_port=$(free_port)
mkdir -p "$tmp/broker"
# Started as root, Mosquitto runs as its own user (option `user`): it must write here.
if ((EUID == 0)) && id mosquitto >/dev/null 2>&1; then chown mosquitto "$tmp/broker"; fi
{
  broker_conf "$broker_port" "$BROKER_NODELAY"
  cat <<EOF
# Sessions, subscriptions and queued or in-flight QoS 1/2 messages are written to disk when
# the broker stops (SIGTERM) and read back when it starts.
persistence $BROKER_PERSISTENCE
persistence_location $tmp/broker/
autosave_interval 1800
log_type notice
log_type information
connection_messages true
log_timestamp_format %Y-%m-%dT%H:%M:%S
EOF
} >"$tmp/mosquitto.conf"
broker_log=$tmp/mosquitto.log
start_mosquitto "$tmp/mosquitto.conf" "$broker_log" "$broker_port" ||
  die "mosquitto did not start: $(tail -5 "$broker_log")"

restarts=0
broker_kills=0
broker_bad_exits=0
down_min=""
down_max=0
down_sum=0
# Graceful: SIGTERM (the broker saves its sessions), then the same configuration and port.
restart_broker() {
  local t0 down attempt
  t0=$(now_ms)
  stop_pid "$broker_pid"
  ((stop_killed)) && broker_kills=$((broker_kills + 1))
  ((stop_status == 0 || stop_killed)) || broker_bad_exits=$((broker_bad_exits + 1))
  [[ $BROKER_PERSISTENCE == false || -s $tmp/broker/mosquitto.db ]] ||
    log "$prog: no persistence file after the broker stopped"
  for ((attempt = 1; ; attempt++)); do
    start_mosquitto "$tmp/mosquitto.conf" "$broker_log" "$broker_port" && break
    alive "$broker_pid" && stop_pid "$broker_pid"
    ((attempt < 5)) || die "mosquitto did not start again on port $broker_port: $(tail -5 "$broker_log")"
    sleep 1
  done
  down=$(($(now_ms) - t0))
  restarts=$((restarts + 1))
  down_sum=$((down_sum + down))
  ((down > down_max)) && down_max=$down
  if [[ -z $down_min ]] || ((down < down_min)); then down_min=$down; fi
}

# --- API and homd ------------------------------------------------------------------------------
# nginx serves get, post and bin itself and passes /slow/... to hom-slow-api: a few HTTP calls
# are always running in homd, so each broker restart catches replies on their way.
start_slow_api "$SOAK_SLOW_MS"
start_nginx "$slow_port"
homd_id=bench-soak
homd_log=$tmp/homd.log
env -i PATH="$PATH" GNUTLS_NO_IMPLICIT_INIT=1 MQTT_HOST=127.0.0.1 MQTT_PORT="$broker_port" \
  MQTT_TLS=off MQTT_TOPIC_ID="$homd_id" MQTT_CLEAN_SESSION=0 HTTP_BASE_URL="http://127.0.0.1:$api_port/" \
  LOG_LEVEL="$HOMD_LOG_LEVEL" WORKERS="$HOMD_WORKERS" "$HOMD" >"$homd_log" 2>&1 &
homd_pid=$!
pids+=("$homd_pid")
"$LOADGEN" --port "$broker_port" --id "$homd_id" -q 1 -d 0 --probe 20 >/dev/null ||
  die "homd does not answer: $(tail -5 "$homd_log")"

# --- load ---------------------------------------------------------------------------------------
log "soak: ${SOAK_DURATION} s at ${SOAK_RATE} req/s (c=$SOAK_CONC, QoS $SOAK_QOS), broker restart every ${RESTART_EVERY} s, sample every ${SAMPLE_EVERY} s; load average $(cut -d' ' -f1-3 /proc/loadavg)"
log "$("$HOMD" --version), $("$MOSQUITTO" -h 2>&1 | head -1), $("$NGINX" -v 2>&1)"
loadgen_out=$tmp/loadgen.json
loadgen_err=$tmp/loadgen.err
"$LOADGEN" --soak --port "$broker_port" --id "$homd_id" --qos-mix "$SOAK_QOS" -c "$SOAK_CONC" \
  --mix "$SOAK_MIX" \
  --rate "$SOAK_RATE" -d "$SOAK_DURATION" -t 10 --grace "$SOAK_GRACE" \
  --progress "$SAMPLE_EVERY" --client-id hom-soak-loadgen >"$loadgen_out" 2>"$loadgen_err" &
loadgen_pid=$!
pids+=("$loadgen_pid")
start_ms=$(now_ms)
read -r _ _ _ cpu0 _ <<<"$(sample "$homd_pid")"

samples=$tmp/samples.tsv  # t_s rss_kb fds threads
: >"$samples"
homd_died=""

# jget KEY JSON: a number (or true/false) from a flat JSON line (each key once).
jget() { sed -n "s/.*[{,]\"$1\":\([^,}]*\).*/\1/p" <<<"$2"; }

# take_sample T [LABEL]
take_sample() {
  local t=$1 label=${2:-$1 s} status rss threads fds progress broker_state=up
  if ! status=$(<"/proc/$homd_pid/status") 2>/dev/null || ! alive "$homd_pid"; then
    homd_died=1
    return
  fi
  rss=$(awk '/^VmRSS:/ {print $2}' <<<"$status")
  threads=$(awk '/^Threads:/ {print $2}' <<<"$status")
  fds=(/proc/"$homd_pid"/fd/*)
  printf '%s %s %s %s\n' "$t" "$rss" "${#fds[@]}" "$threads" >>"$samples"
  progress=$(grep '^progress ' "$loadgen_err" | tail -1 || true)
  [[ $(jget connected "$progress") == false ]] && broker_state="loadgen reconnecting"
  printf '%8s  homd RSS %5s MB  fds %3s  threads %3s | sent %7s  answered %7s  in flight %4s  not sent %5s  dup %3s  err %3s | broker restarts %3s (%s)\n' \
    "$label" "$(mb "$rss")" "${#fds[@]}" "$threads" "$(jget sent "$progress")" \
    "$(jget answered "$progress")" "$(jget outstanding "$progress")" \
    "$(jget not_sent "$progress")" "$(jget duplicates "$progress")" \
    "$(jget errors "$progress")" "$restarts" "$broker_state"
}

# Bounded: the load, the grace and a minute more; the load generator ends on its own before.
limit_ms=$(((SOAK_DURATION + SOAK_GRACE + 60) * 1000))
next_sample_ms=0
next_restart_ms=$((RESTART_EVERY * 1000))
take_sample 0
next_sample_ms=$((SAMPLE_EVERY * 1000))
timed_out=""
while alive "$loadgen_pid"; do
  t=$(($(now_ms) - start_ms))
  if ((t >= limit_ms)); then
    timed_out=1
    log "$prog: the load generator did not finish in time; stopping it"
    break
  fi
  if ((RESTART_EVERY > 0 && t >= next_restart_ms && next_restart_ms < SOAK_DURATION * 1000)); then
    restart_broker
    next_restart_ms=$((next_restart_ms + RESTART_EVERY * 1000))
  fi
  # A moment after the mark, so the load generator's progress line for it is out.
  if ((t >= next_sample_ms + 300)); then
    take_sample $((next_sample_ms / 1000))
    next_sample_ms=$((next_sample_ms + SAMPLE_EVERY * 1000))
    [[ -n $homd_died ]] && break
  fi
  sleep 0.2
done
stop_pid "$loadgen_pid"
loadgen_status=$stop_status
take_sample $((($(now_ms) - start_ms) / 1000)) end
cpu1=$cpu0
[[ -z $homd_died ]] && read -r _ hwm _ cpu1 _ <<<"$(sample "$homd_pid")"

# --- summary ------------------------------------------------------------------------------------
j=$(cat "$loadgen_out")
[[ -n $j ]] || { keep_tmp=1; die "the load generator printed no result: $(tail -5 "$loadgen_err")"; }
n() { local v; v=$(jget "$1" "$j"); echo "${v:-0}"; }
dup_q1=$(n duplicates_qos1)
dup_q2=$(n duplicates_qos2)

# flat NAME COLUMN TOLERANCE MODE: statistics of one column of the samples after the warm-up
# and up to the end of the load. MODE "pct": the last third's average within TOLERANCE % of
# the first third's; "abs": within ±TOLERANCE. Prints "first last min max avg1 avg3 verdict".
flat() {
  awk -v col="$2" -v tol="$3" -v mode="$4" -v w="$SOAK_WARMUP" -v d="$SOAK_DURATION" '
    NR == 1 { first = $col }
    { last = $col; if (min == "" || $col < min) min = $col; if ($col > max) max = $col }
    $1 >= w && $1 <= d { v[n++] = $col }
    END {
      k = int(n / 3)
      if (k < 1) { printf "%s %s %s %s - - unknown\n", first, last, min, max; exit }
      for (i = 0; i < k; i++) { a += v[i]; b += v[n - k + i] }
      a /= k; b /= k
      ok = (mode == "pct") ? (b <= a * (1 + tol / 100) && b >= a * (1 - tol / 100)) \
                           : (b - a <= tol && a - b <= tol)
      printf "%s %s %s %s %.1f %.1f %s\n", first, last, min, max, a, b, (ok ? "flat" : "NOT-flat")
    }' "$samples"
}
read -r rss_first rss_last rss_min rss_max rss_a rss_b rss_verdict <<<"$(flat rss 2 10 pct)"
read -r fd_first fd_last fd_min fd_max fd_a fd_b fd_verdict <<<"$(flat fds 3 2 abs)"
read -r th_first th_last th_min th_max th_a th_b th_verdict <<<"$(flat threads 4 2 abs)"
mb_or() { if [[ $1 == - ]]; then echo -; else mb "$1"; fi; }

# homd's log lines are "date time level message".
homd_lost=$(grep -c 'connection to the broker lost' "$homd_log" || true)
homd_retry=$(grep -c 'failed: .*retrying in' "$homd_log" || true)
homd_errors=$(awk '$3 == "error" || $3 == "critical"' "$homd_log" | wc -l)
homd_warn_other=$(awk '$3 == "warning" && !/connection to the broker lost|retrying in/' "$homd_log" | wc -l)
tck=$(getconf CLK_TCK)
homd_cpu=$(awk -v t="$((cpu1 - cpu0))" -v h="$tck" -v n="$(n answered)" \
  'BEGIN {printf "%.1f s (%.3f s per 1000 requests)", t / h, (n > 0 ? t / h / n * 1000 : 0)}')
down_avg=$(awk -v s="$down_sum" -v n="$restarts" 'BEGIN {printf "%.2f", (n > 0 ? s / n / 1000 : 0)}')

echo
echo "## Soak: $(date -u +%Y-%m-%d), ${SOAK_DURATION} s, broker restarted every ${RESTART_EVERY} s"
echo
echo "Load: ${SOAK_RATE} req/s (c=$SOAK_CONC, request QoS $SOAK_QOS in turn, replies at QoS 2; kinds $SOAK_MIX in turn, slow = ${SOAK_SLOW_MS} ms), ${SOAK_GRACE} s grace for late replies. homd: WORKERS=$HOMD_WORKERS, persistent session. Broker persistence: $BROKER_PERSISTENCE. $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end."
echo
echo "| requests | count |"
echo "| --- | ---: |"
echo "| sent (handed to the broker's connection) | $(n sent) |"
echo "| answered | $(n answered) |"
echo "| answered exactly once | $(n answered_once) |"
echo "| answered more than once (duplicates) | $(n duplicates) (QoS 1: $dup_q1, QoS 2: $dup_q2) |"
echo "| lost (never answered, ${SOAK_GRACE} s grace) | $(n lost) ($(n lost_unacknowledged) never acknowledged by the broker) |"
echo "| errors (wrong status, content, topic; unexpected replies) | $(n errors) |"
echo "| not sent (publish refused while the broker was away) | $(n not_sent) |"
echo "| answered after their client's 10 s timeout (late) | $(n late) |"
echo "| published before a connection loss of the load generator, answered after it | $(n across_connection_loss) |"
echo
echo "Latency (publish → reply): p50 $(n p50_us) µs, p99 $(n p99_us) µs, max $(n max_us) µs."
echo "Broker: $restarts restarts (down $(awk -v m="${down_min:-0}" 'BEGIN {printf "%.2f", m / 1000}')–$(awk -v m="$down_max" 'BEGIN {printf "%.2f", m / 1000}') s, average $down_avg s)$( ((broker_kills > 0)) && echo ", $broker_kills needed SIGKILL")$( ((broker_bad_exits > 0)) && echo ", $broker_bad_exits exited non-zero"). Load generator: $(n connection_losses) connections lost, $(n connects) connects."
echo "homd: CPU $homd_cpu; log: $homd_lost × connection lost, $homd_retry × reconnect failed (retried), $homd_errors errors, $homd_warn_other other warnings."
echo
echo "homd after a ${SOAK_WARMUP} s warm-up: flat = last third's average within 10 % (RSS) or ±2 (fds, threads) of the first third's."
echo
echo "| homd | first | last | min | max | first third avg | last third avg | |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
echo "| RSS MB | $(mb "$rss_first") | $(mb "$rss_last") | $(mb "$rss_min") | $(mb "$rss_max") | $(mb_or "$rss_a") | $(mb_or "$rss_b") | $rss_verdict |"
echo "| open fds | $fd_first | $fd_last | $fd_min | $fd_max | $fd_a | $fd_b | $fd_verdict |"
echo "| threads | $th_first | $th_last | $th_min | $th_max | $th_a | $th_b | $th_verdict |"
[[ -z $homd_died ]] && echo && echo "homd peak RSS (VmHWM): $(mb "$hwm") MB."

failures=()
[[ -n $homd_died ]] && failures+=("homd exited")
[[ -n $timed_out ]] && failures+=("the load generator did not finish")
((loadgen_status == 0)) || failures+=("the load generator exited with $loadgen_status")
(($(n lost) == 0)) || failures+=("$(n lost) lost")
(($(n errors) == 0)) || failures+=("$(n errors) errors")
((dup_q2 == 0)) || failures+=("$dup_q2 QoS 2 requests answered twice")
[[ $rss_verdict == flat ]] || failures+=("RSS $rss_verdict")
[[ $fd_verdict == flat ]] || failures+=("fds $fd_verdict")
[[ $th_verdict == flat ]] || failures+=("threads $th_verdict")
# homd last: its graceful exit is part of the result.
if [[ -z $homd_died ]]; then
  stop_pid "$homd_pid"
  ((stop_status == 0 && stop_killed == 0)) || failures+=("homd exited with $stop_status on SIGTERM")
fi
echo
if ((${#failures[@]} == 0)); then
  echo "Result: PASS"
  exit 0
fi
joined=$(printf '%s; ' "${failures[@]}")
echo "Result: FAIL (${joined%; })"
keep_tmp=1
if [[ -s $loadgen_err ]]; then
  log "load generator notes:"
  grep -v '^progress ' "$loadgen_err" | head -30 >&2 || true
fi
log "homd log (last lines):"
tail -20 "$homd_log" >&2 || true
exit 1
