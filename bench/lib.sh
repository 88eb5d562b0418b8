# Shared by bench/run.sh and bench/soak.sh (sourced, not run): finding the servers, the
# Release build, the processes started and stopped by PID, the Mosquitto and nginx setup,
# and /proc sampling. The sourcing script sets `prog` (its name in messages) and `root` (the
# project) first.
# shellcheck shell=bash disable=SC2034,SC2154  # variables shared with the sourcing script

log() { printf '%s\n' "$*" >&2; }
die() { log "$prog: $*"; exit 1; }

# --- tools -------------------------------------------------------------------------------
find_tool() { command -v "$1" 2>/dev/null || { [[ -x /usr/sbin/$1 ]] && echo "/usr/sbin/$1"; } || true; }

# Sets MOSQUITTO and NGINX.
find_servers() {
  MOSQUITTO=$(find_tool mosquitto)
  NGINX=$(find_tool nginx)
  [[ -n $MOSQUITTO ]] || die "mosquitto not found; run bench/deps.sh"
  [[ -n $NGINX ]] || die "nginx not found; run bench/deps.sh"
}

# build TARGET...: configures a Release build in BUILD_DIR when there is none, builds the
# targets; sets HOMD, LOADGEN, ECHO, SLOW_API.
build() {
  if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
    local generator=()
    command -v ninja >/dev/null && generator=(-G Ninja)
    log "configuring a Release build in $BUILD_DIR"
    cmake -S "$root" -B "$BUILD_DIR" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
      -DHOM_BUILD_TESTS=OFF -DHOM_BUILD_BENCH=ON >/dev/null
  fi
  cmake --build "$BUILD_DIR" --target "$@" >/dev/null ||
    die "the build failed (cmake --build $BUILD_DIR)"
  HOMD=$BUILD_DIR/homd
  LOADGEN=$BUILD_DIR/bench/hom-loadgen
  ECHO=$BUILD_DIR/bench/hom-echo
  SLOW_API=$BUILD_DIR/bench/hom-slow-api
  HTTP_FLOOR=$BUILD_DIR/bench/hom-http-floor
  RSS_FLOOR=$BUILD_DIR/bench/hom-rss-floor
}

# --- processes ---------------------------------------------------------------------------
# make_tmp: the temporary directory (tmp) and the PIDs to stop at exit (pids). At exit every
# PID is stopped and tmp removed, unless keep_tmp is non-empty.
make_tmp() {
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/hom-bench.XXXXXX")
  chmod 755 "$tmp"  # nginx's workers may run as another user: they read the fixtures here
  pids=()
  keep_tmp=""
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

alive() { [[ $(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) =~ ^[^Z]$ ]]; }

forget_pid() {
  local kept=() p
  for p in "${pids[@]+"${pids[@]}"}"; do [[ $p == "$1" ]] || kept+=("$p"); done
  pids=("${kept[@]+"${kept[@]}"}")
}

# stop_pid PID: SIGTERM, up to 15 s for a graceful exit, then SIGKILL (stop_killed=1 then,
# else 0); stop_status is its exit status.
stop_pid() {
  local pid=$1 i
  stop_killed=0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    log "$prog: pid $pid did not stop in 15 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    stop_killed=1
  fi
  stop_status=0
  wait "$pid" 2>/dev/null || stop_status=$?
  forget_pid "$pid"
}

cleanup() {
  local i
  # The last started first: a client before its server (nginx before hom-slow-api, whose
  # threads would otherwise wait out nginx's keep-alive connections).
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[i]}"; done
  if [[ -n $keep_tmp ]]; then
    log "$prog: logs kept in $tmp"
  else
    rm -rf "$tmp"
  fi
}

wait_port() {  # port seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

free_port() { "$LOADGEN" --free-port; }

# --- Mosquitto -----------------------------------------------------------------------------
# broker_conf PORT NODELAY: the settings both benchmarks share (the caller adds persistence).
broker_conf() {
  cat <<EOF
listener $1 127.0.0.1
allow_anonymous true
# No window and no queue limit: the broker must not be what drops or throttles replies.
max_inflight_messages 0
max_queued_messages 0
set_tcp_nodelay $2
log_dest stderr
log_type error
log_type warning
EOF
}

# start_mosquitto CONF LOG PORT: starts it (appending to LOG), waits for the port; sets
# broker_pid. Returns 1 when it did not come up within 10 s.
start_mosquitto() {
  "$MOSQUITTO" -c "$1" >>"$2" 2>&1 &
  broker_pid=$!
  pids+=("$broker_pid")
  wait_port "$3" 10
}

# --- nginx: the API --------------------------------------------------------------------------
# start_nginx [SLOW_PORT]: nginx in the foreground on a free port serving the fixtures
# (bench/README.md, "The API"); with SLOW_PORT, /slow/... is passed on to hom-slow-api there
# as /... . Sets api_port, nginx_pid and api_pid (its one worker).
start_nginx() {
  api_port=$(free_port)
  local dir=$tmp/nginx upstream="" slow=""
  if [[ -n ${1:-} ]]; then
    upstream="upstream slow_api { server 127.0.0.1:$1; keepalive 16; }"
    slow='location /slow/ { proxy_pass http://slow_api/; proxy_http_version 1.1; proxy_set_header Connection ""; }'
  fi
  mkdir -p "$dir/www"
  chmod 755 "$dir" "$dir/www"
  "$LOADGEN" --write-fixtures "$dir/www"
  chmod 644 "$dir/www"/*
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections ${NGINX_CONNECTIONS:-1024}; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_timeout 60s;
  keepalive_requests 1000000;
  $upstream
  server {
    listen 127.0.0.1:$api_port;
    location = /gps/latitude { default_type application/json; alias $dir/www/latitude.json; }
    location = /food/dessert { default_type text/plain; return 201 "$(cat "$dir/www/dessert.txt")"; }
    location = /bin { default_type application/octet-stream; alias $dir/www/bin; }
    $slow
  }
}
EOF
  "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;' \
    >"$dir/stdout.log" 2>&1 &
  nginx_pid=$!
  pids+=("$nginx_pid")
  wait_port "$api_port" 10 || die "nginx did not start: $(cat "$dir/error.log" "$dir/stdout.log")"
  # The one worker does the serving; its CPU is the API's cost per request.
  local i
  for ((i = 0; i < 50; i++)); do
    api_pid=$(cut -d' ' -f1 "/proc/$nginx_pid/task/$nginx_pid/children" 2>/dev/null || true)
    [[ -n $api_pid ]] && return 0
    sleep 0.1
  done
  die "nginx started no worker: $(cat "$dir/error.log")"
}

# start_slow_api DELAY_MS: hom-slow-api on a free port; sets slow_port.
start_slow_api() {
  "$SLOW_API" --delay-ms "$1" --threads 128 >"$tmp/slow-api.log" 2>&1 &
  pids+=($!)
  local i
  for ((i = 0; i < 100; i++)); do
    slow_port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/slow-api.log" 2>/dev/null || true)
    [[ -n $slow_port ]] && return 0
    sleep 0.1
  done
  die "hom-slow-api did not start: $(cat "$tmp/slow-api.log")"
}

# --- /proc ---------------------------------------------------------------------------------
# sample PID: "rss_kb hwm_kb threads cpu_ticks context_switches" of a process.
sample() {
  local status rss hwm threads cpu cs
  status=$(<"/proc/$1/status")
  rss=$(awk '/^VmRSS:/ {print $2}' <<<"$status")
  hwm=$(awk '/^VmHWM:/ {print $2}' <<<"$status")
  threads=$(awk '/^Threads:/ {print $2}' <<<"$status")
  # utime and stime are fields 14 and 15; the name in parentheses may hold spaces.
  cpu=$(sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}')
  # Voluntary and involuntary, summed over the threads: the cost of hand-offs.
  cs=$(cat "/proc/$1/task/"*/status 2>/dev/null | awk '/ctxt_switches:/ {n += $2} END {print n + 0}')
  echo "$rss $hwm $threads $cpu $cs"
}

mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
