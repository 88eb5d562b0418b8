#!/usr/bin/env bash
# A fleet on one broker (bench/README.md, "A fleet of 1 000"; SPEC §9): COUNT homd processes
# with distinct ids on one private Mosquitto, one shared API (nginx), then:
#   1. the time until every device's presence says online;
#   2. a call to every device through the multi-flight Requester (hom-fleet-probe): all must
#      answer; p50/p99 latency;
#   3. memory per device (PSS and private, /proc/PID/smaps_rollup), the broker's RSS;
#   4. a broker restart after a DOWN_S outage: connects per second (from the broker's log),
#      the time until every device is connected and until every device answers again.
# Each figure is printed against its target. Loopback only; every wait is bounded; every
# process is started here and stopped by its PID.
#
# Environment: COUNT (1000), DOWN_S (5: the broker's outage), HOMD_WORKERS (homd's default),
# START_BATCH (50: homd started per batch, then a pause of START_PAUSE_MS, 200), BUILD_DIR,
# KEEP_LOGS (keep the temporary directory).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
prog=fleet.sh
COUNT=${COUNT:-1000}
DOWN_S=${DOWN_S:-5}
HOMD_WORKERS=${HOMD_WORKERS:-}
START_BATCH=${START_BATCH:-50}
START_PAUSE_MS=${START_PAUSE_MS:-200}
BUILD_DIR=${BUILD_DIR:-$root/build-bench}
KEEP_LOGS=${KEEP_LOGS:-}

# shellcheck source=bench/lib.sh
source "$here/lib.sh"

for v in COUNT DOWN_S START_BATCH START_PAUSE_MS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number"
done
((COUNT >= 1)) || die "COUNT must be at least 1"
((START_BATCH >= 1)) || die "START_BATCH must be at least 1"

# --- limits: descriptors, tasks, memory ------------------------------------------------------
# Mosquitto holds one descriptor per device, nginx one per device's keep-alive connection.
need_fds=$((COUNT + 256))
if (($(ulimit -n) < need_fds)); then
  ulimit -n "$need_fds" 2>/dev/null || die "ulimit -n is $(ulimit -n) (hard $(ulimit -Hn)); need $need_fds"
fi
# Each homd is about 8 tasks (threads); the cgroup and the user both limit tasks.
need_tasks=$((COUNT * 10 + 200))
pids_max=$(cat /sys/fs/cgroup/pids.max 2>/dev/null || echo max)
pids_now=$(cat /sys/fs/cgroup/pids.current 2>/dev/null || echo 0)
if [[ $pids_max != max ]] && ((pids_max - pids_now < need_tasks)); then
  die "the cgroup allows $pids_max tasks ($pids_now in use); $COUNT homd need about $need_tasks"
fi
if [[ $(ulimit -u) != unlimited ]] && (($(ulimit -u) < need_tasks)); then
  die "ulimit -u is $(ulimit -u); $COUNT homd need about $need_tasks tasks"
fi
avail_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
((avail_kb > COUNT * 8 * 1024)) || die "$((avail_kb / 1024)) MB available; $COUNT homd need about $((COUNT * 8)) MB"

find_servers
build homd hom-loadgen hom-fleet-probe
PROBE=$BUILD_DIR/bench/hom-fleet-probe
make_tmp
[[ -n $KEEP_LOGS ]] && keep_tmp=1

# The fleet is stopped all at once (SIGTERM to each PID, then one bounded wait), not one by
# one as lib.sh's cleanup does; then the rest (broker, nginx) as usual.
fleet_pids=()
stop_fleet() {
  local p i left
  ((${#fleet_pids[@]})) || return 0
  log "stopping $COUNT homd"
  for p in "${fleet_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for ((i = 0; i < 300; i++)); do
    left=0
    for p in "${fleet_pids[@]}"; do alive "$p" && { left=1; break; }; done
    ((left)) || break
    sleep 0.1
  done
  for p in "${fleet_pids[@]}"; do
    alive "$p" && kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  fleet_pids=()
}
trap 'stop_fleet; cleanup' EXIT

now() { echo "$EPOCHREALTIME"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }

# --- the API and the broker ------------------------------------------------------------------
NGINX_CONNECTIONS=$((COUNT + 64)) start_nginx
broker_port=$(free_port)
mkdir -p "$tmp/broker" "$tmp/homd"
chmod 777 "$tmp/broker"
{
  broker_conf "$broker_port" true
  echo "max_connections $((COUNT + 64))"
  echo "persistence false"
  # One line per connect, with its Unix time: the connects per second after the restart.
  echo "log_type notice"
  echo "connection_messages true"
  echo "log_timestamp true"
} >"$tmp/broker/mosquitto.conf"
start_mosquitto "$tmp/broker/mosquitto.conf" "$tmp/broker/start-1.log" "$broker_port" ||
  die "mosquitto did not start: $(cat "$tmp/broker/start-1.log")"
broker_idle_kb=$(sample "$broker_pid" | cut -d' ' -f1)

# --- 1. the fleet comes online ---------------------------------------------------------------
"$PROBE" online --port "$broker_port" --count "$COUNT" --deadline $((120 + COUNT / 5)) \
  >"$tmp/online.txt" 2>&1 &
online_pid=$!
pids+=("$online_pid")
log "starting $COUNT homd (batches of $START_BATCH)"
workers=()
[[ -n $HOMD_WORKERS ]] && workers=(WORKERS="$HOMD_WORKERS")
first_start=$(now)
for ((i = 0; i < COUNT; i++)); do
  env -i PATH="$PATH" GNUTLS_NO_IMPLICIT_INIT=1 MQTT_HOST=127.0.0.1 MQTT_PORT="$broker_port" \
    MQTT_TLS=off MQTT_TOPIC_ID="fleet-$i" HTTP_BASE_URL="http://127.0.0.1:$api_port/" \
    LOG_LEVEL=info "${workers[@]}" "$HOMD" >"$tmp/homd/$i.log" 2>&1 &
  fleet_pids+=($!)
  if (((i + 1) % START_BATCH == 0)); then sleep "$(awk -v m="$START_PAUSE_MS" 'BEGIN {print m / 1000}')"; fi
done
started_all=$(now)
online_status=0
wait "$online_pid" || online_status=$?
forget_pid "$online_pid"
online_line=$(cat "$tmp/online.txt")
log "$online_line"
((online_status == 0)) || die "not every device came online: $online_line"
online_s=$(sed -n 's/.* after \([0-9.]*\) s$/\1/p' <<<"$online_line")

# --- 2. a call to every device ---------------------------------------------------------------
log "calling every device"
call_line=$("$PROBE" call --port "$broker_port" --count "$COUNT" --concurrency 100 --deadline 120 \
  --call-timeout 10 2>&1 | tail -1) || die "not every device answered: $call_line"
log "$call_line"

# --- 3. memory -------------------------------------------------------------------------------
# Pss and Private_* (kB) of each homd after it has served a call.
mem=$(for p in "${fleet_pids[@]}"; do
  awk '/^Pss:/ {pss = $2} /^Private_(Clean|Dirty):/ {priv += $2} /^Rss:/ {rss = $2}
       END {print pss, priv, rss}' "/proc/$p/smaps_rollup"
done | awk '{n++; pss += $1; priv += $2; rss += $3; if ($1 > mp) mp = $1; if ($2 > mv) mv = $2}
            END {printf "%.0f %.0f %.0f %.0f %.0f\n", pss / n, mp, priv / n, mv, rss / n}')
read -r pss_avg pss_max priv_avg priv_max rss_avg <<<"$mem"
threads=$(awk '/^Threads:/ {print $2}' "/proc/${fleet_pids[0]}/status")
broker_kb=$(sample "$broker_pid" | cut -d' ' -f1)

# --- 4. the broker restarts ------------------------------------------------------------------
log "restarting the broker ($DOWN_S s outage)"
down_at=$(now)
stop_pid "$broker_pid"
sleep "$DOWN_S"  # the outage itself: a length of time, not a synchronisation
start_mosquitto "$tmp/broker/mosquitto.conf" "$tmp/broker/start-2.log" "$broker_port" ||
  die "mosquitto did not restart: $(cat "$tmp/broker/start-2.log")"
up_at=$(now)
back_line=$("$PROBE" call --port "$broker_port" --count "$COUNT" --concurrency 200 --deadline 150 \
  --call-timeout 3 --since "$up_at" 2>&1 | tail -1) || true
log "$back_line"
# Connects of the fleet per second after the broker's return (Mosquitto's "New client
# connected ... as homd-fleet-N" lines carry the Unix second).
hist=$(awk -v up="$up_at" '/New client connected .* as homd-fleet-/ {
         s = int(substr($1, 1, length($1) - 1) - int(up)); n[s]++; total++
         if (s > last) last = s }
       END { for (i = 0; i <= last; i++) { printf "%d ", n[i] + 0; if (n[i] > peak) peak = n[i] }
             printf "\n%d %d %d\n", peak, total, last }' "$tmp/broker/start-2.log")
per_second=$(sed -n 1p <<<"$hist")
read -r peak_connects total_connects last_connect_s <<<"$(sed -n 2p <<<"$hist")"
answered_again=$(sed -n 's/^answered \([0-9]*\) of.*/\1/p' <<<"$back_line")
back_s=$(sed -n 's/.*last first-answer \([0-9.-]*\) s after.*/\1/p' <<<"$back_line")

# --- the report ------------------------------------------------------------------------------
verdict() { if awk -v a="$1" -v b="$2" 'BEGIN {exit !(a <= b)}'; then echo "yes"; else echo "**no**"; fi; }
kb_mb() { awk -v k="$1" 'BEGIN {printf "%.2f", k / 1024}'; }
p50=$(sed -n 's/.*p50 \([0-9.]*\) ms.*/\1/p' <<<"$call_line")
p99=$(sed -n 's/.*p99 \([0-9.]*\) ms.*/\1/p' <<<"$call_line")
answered=$(sed -n 's/^answered \([0-9]*\) of.*/\1/p' <<<"$call_line")
quarter=$((COUNT / 4))
cat <<EOF
## A fleet of $COUNT homd on one Mosquitto

| figure | measured | target | met |
| --- | --- | --- | --- |
| private memory per homd, average (max) | $(kb_mb "$priv_avg") MB ($(kb_mb "$priv_max") MB) | ≤ 2 MB | $(verdict "$priv_max" 2048) |
| PSS per homd, average (max) | $(kb_mb "$pss_avg") MB ($(kb_mb "$pss_max") MB) | | |
| RSS per homd, average | $(kb_mb "$rss_avg") MB ($threads threads) | | |
| Mosquitto RSS, idle → $COUNT clients | $(kb_mb "$broker_idle_kb") → $(kb_mb "$broker_kb") MB | | |
| all online (presence), from the first start | ${online_s} s (the last homd started after $(secs "$first_start" "$started_all") s) | | |
| a call to every device | $answered of $COUNT answered, p50 $p50 ms, p99 $p99 ms | all | $( ((answered == COUNT)) && echo yes || echo "**no**") |
| broker restart: outage | $(secs "$down_at" "$up_at") s | | |
| connects per second after the return, peak | $peak_connects ($(awk -v p="$peak_connects" -v n="$COUNT" 'BEGIN {printf "%.0f", 100 * p / n}') % of the fleet) | ≤ 25 % ($quarter) | $(verdict "$peak_connects" "$quarter") |
| all $COUNT connected again ($total_connects connects) | ${last_connect_s} s after the return (second of the last connect) | ≤ 90 s | $(verdict "$last_connect_s" 90) |
| all $COUNT answer again | ${answered_again:-0} answered, the last ${back_s:-?} s after the return | ≤ 90 s | $( [[ ${answered_again:-0} == "$COUNT" ]] && verdict "${back_s:-999}" 90 || echo "**no**") |

Connects per second after the broker's return (second 0 first): $per_second
EOF
