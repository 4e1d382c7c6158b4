#!/usr/bin/env bash
# How the cost per request grows: CPU µs per request and p99 of Portcullis (auth none, or
# Basic for the credential axis) and of nginx where nginx can express the same thing, one
# axis at a time, everything else fixed (wrk -t1 -c64 keep-alive, GET / unless said).
#
#   cargo build --release --example preload_bans && bench/growth.sh [AXIS...]
#
# Axes: routes (1, 100, 10000), bans (0, 100000, 1000000), credentials (1000, 100000,
# 1000000 cached), body (request body 0, 4 KiB, 1 MiB), pool (1, 10, 100 servers),
# conns (64, 1000, 10000 connections of which 64 busy). DURATION (8) REPS (3).
# Prints one markdown table per axis. Loopback only; everything started is stopped.
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
source "$BENCH/lib/common.sh"
DURATION="${DURATION:-8}"; REPS="${REPS:-3}"; NICE="${NICE:--10}"
RUN="${RUN:-$BENCH/.run}/growth"; rm -rf "$RUN"; mkdir -p "$RUN"
export RUN
source "$BENCH/lib/standalone.sh"
AXES=("$@"); [ ${#AXES[@]} -gt 0 ] || AXES=(routes bans credentials body pool conns)
PORTCULLIS_BIN="${PORTCULLIS_BIN:-$PWD/target/release/portcullis}"
PRELOAD_BIN="${PRELOAD_BIN:-$PWD/target/release/examples/preload_bans}"
POOL_BASE=18300          # the origin also listens on POOL_BASE .. POOL_BASE+99 (pool axis)
PROXY_PORT=18400
ulimit -n "$(ulimit -Hn)"   # 10,000 connections need more than the default 1,024

# ---- origin: 200 "ok" for anything (any method, bodies up to 2 MiB read and dropped),
# /auth accepts every Basic credential of the bench users u<N> (credential axis).
UP=$(nginx_prefix origin)
{
  echo "worker_processes 1; pid nginx.pid; error_log logs/error.log warn; worker_rlimit_nofile 8192;"
  echo "events { worker_connections 4096; }"
  echo "http {"
  nginx_http_common
  echo "    client_max_body_size 2m; client_body_buffer_size 2m;"
  echo "    server {"
  echo "        listen $HOST:$UPSTREAM_PORT backlog=4096;"
  for i in $(seq 0 99); do echo "        listen $HOST:$((POOL_BASE + i));"; done
  echo "        location = /auth { if (\$http_authorization ~ \"^Basic \") { return 200 \"authorized\"; } return 401 \"denied\"; }"
  echo "        location / { return 200 \"ok\"; }"
  echo "    }"
  echo "}"
} > "$UP/nginx.conf"
start origin "$UPSTREAM_CPUS" nginx -p "$UP" -c "$UP/nginx.conf" -g 'daemon off;'
wait_http "http://$HOST:$UPSTREAM_PORT/" || die "origin did not start"

# ---- targets -------------------------------------------------------------------------
# portcullis_run DIR EXTRA_SERVICE_LINES EXTRA_TOP_LINES AUTH UPSTREAMS -> starts it, sets TPID
portcullis_start() {
  local dir=$RUN/$1 service_extra=$2 top_extra=$3 auth=$4 servers=$5 i
  mkdir -p "$dir/state" "$dir/logs"
  {
    printf '[server]\nname = "localhost"\nstate_dir = "%s/state"\nlog_dir = "%s/logs"\n' "$dir" "$dir"
    printf '[[listener]]\nname = "http"\naddress = "%s:%s"\ntls = false\n' "$HOST" "$PROXY_PORT"
    printf '%s\n' "$top_extra"
    printf '[[service]]\nname = "origin"\nauth = "%s"\n%s\n' "$auth" "$service_extra"
    for i in $(seq 0 $((servers - 1))); do
      if [ "$servers" = 1 ]; then printf '[[service.upstream]]\naddress = "%s:%s"\n' "$HOST" "$UPSTREAM_PORT"
      else printf '[[service.upstream]]\naddress = "%s:%s"\n' "$HOST" "$((POOL_BASE + i))"; fi
    done
    printf '[service.health_check]\nenabled = false\n'
    printf '[auth.basic]\nvalidate_url = "http://%s:%s/auth"\ncredential_ttl = "900s"\n' "$HOST" "$UPSTREAM_PORT"
  } > "$dir/portcullis.toml"
  start "$1" "$PROXY_CPUS" "$PORTCULLIS_BIN" serve --config "$dir/portcullis.toml"; TPID=$LAST_PID
  wait_http "http://$HOST:$PROXY_PORT/" || wait_port "$PROXY_PORT" || die "portcullis $1 did not start (log $RUN/$1.log)"
}
# nginx_start NAME HTTP_EXTRA SERVER_EXTRA SERVERS
nginx_start() {
  local p i
  p=$(nginx_prefix "$1")
  {
    echo "worker_processes 1; pid nginx.pid; error_log logs/error.log warn; worker_rlimit_nofile 32768;"
    echo "events { worker_connections 16384; }"
    echo "http {"
    nginx_http_common
    echo "    client_max_body_size 2m;"
    echo "    upstream origin {"
    if [ "$4" = 1 ]; then echo "        server $HOST:$UPSTREAM_PORT;"
    else for i in $(seq 0 $(($4 - 1))); do echo "        server $HOST:$((POOL_BASE + i));"; done; fi
    echo "        keepalive 128; keepalive_requests 1000000; keepalive_timeout 120s;"
    echo "    }"
    echo "    proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host \$host;"
    echo "    proxy_set_header X-Forwarded-For \$remote_addr; proxy_set_header X-Forwarded-Proto \$scheme;"
    printf '%s\n' "$2"
    echo "    server {"
    echo "        listen $HOST:$PROXY_PORT backlog=4096;"
    printf '%s\n' "$3"
    echo "        location / { proxy_pass http://origin; }"
    echo "    }"
    echo "}"
  } > "$p/nginx.conf"
  start "$1" "$PROXY_CPUS" nginx -p "$p" -c "$p/nginx.conf" -g 'daemon off;'; TPID=$LAST_PID
  wait_http "http://$HOST:$PROXY_PORT/" || die "nginx $1 did not start"
}
stop_target() { stop_pid "$TPID"; sleep 0.5; }

# measure PATH [WRK ARGS...] -> "cpu_us_per_req p99_ms" (medians over REPS)
measure() {
  local path=$1; shift
  local cpus=() p99s=() rep t0 t1 out reqs
  taskset -c "$LOAD_CPUS" wrk -t1 -c64 -d2s "$@" "http://$HOST:$PROXY_PORT$path" >/dev/null
  for rep in $(seq "$REPS"); do
    t0=$(cpu_ticks "$TPID")
    # PERF_DIR=dir: a perf profile of each measured row's first rep (folded stacks).
    if [ -n "${PERF_DIR:-}" ] && [ "$rep" = 1 ]; then
      mkdir -p "$PERF_DIR"
      perf record -F 999 -g --call-graph dwarf,16384 -p "$TPID" -o "$RUN/perf-$TPID.data" -- sleep "$DURATION" 2>/dev/null &
    fi
    out=$(nice -n "$NICE" taskset -c "$LOAD_CPUS" wrk -t1 -c64 -d"${DURATION}s" --latency --timeout 5s "$@" "http://$HOST:$PROXY_PORT$path")
    t1=$(cpu_ticks "$TPID")
    if [ -n "${PERF_DIR:-}" ] && [ "$rep" = 1 ]; then
      wait
      perf script -i "$RUN/perf-$TPID.data" 2>/dev/null | inferno-collapse-perf > "$PERF_DIR/$(basename "$(readlink -f /proc/"$TPID"/cwd)")-$TPID.folded" || true
    fi
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    if grep -q "Non-2xx" <<<"$out"; then log "non-2xx answers: $(grep Non-2xx <<<"$out")"; fi
    cpus+=("$(awk -v t=$((t1 - t0)) -v r="$reqs" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz * 1e6 / r}')")
    p99s+=("$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.2f", v}' <<<"$out")")
  done
  echo "$(printf '%s\n' "${cpus[@]}" | median) $(printf '%s\n' "${p99s[@]}" | median)"
}
row() { # LABEL PORTCULLIS_RESULT NGINX_RESULT (stop_pid clobbers $p: names kept apart)
  local ours=($2) peer=(${3:-- -}) ratio=-
  [ "${peer[0]}" != - ] && ratio=$(awk -v a="${ours[0]}" -v b="${peer[0]}" 'BEGIN {printf "%.2f", a / b}')
  echo "| $1 | ${ours[0]} | ${ours[1]} | ${peer[0]} | ${peer[1]} | $ratio |"
}
header() {
  echo; echo "#### $1"; echo
  echo "| $2 | Portcullis CPU µs/req | Portcullis p99 ms | nginx CPU µs/req | nginx p99 ms | ratio |"
  echo "|---|---:|---:|---:|---:|---:|"
}

axis_routes() {
  header "Routes (longest-prefix match; the request matches the last route)" routes
  local n extra nextra i path
  for n in 1 100 10000; do
    extra=""; nextra=""; path=/
    if [ "$n" -gt 1 ]; then
      extra=$(for i in $(seq 1 $((n - 1))); do printf '[[route]]\npath = "/r%s/"\nservice = "origin"\n' "$i"; done)
      nextra=$(for i in $(seq 1 $((n - 1))); do printf '        location /r%s/ { proxy_pass http://origin; }\n' "$i"; done)
      path="/r$((n - 1))/x"
    fi
    portcullis_start "routes-$n" "" "[[route]]
path = \"/\"
service = \"origin\"
$extra" none 1
    local mine; mine=$(measure "$path"); stop_target
    nginx_start "nginx-routes-$n" "" "$nextra" 1
    local theirs; theirs=$(measure "$path"); stop_target
    row "$n" "$mine" "$theirs"
  done
}

axis_bans() {
  header "Active bans of other sources (nginx: no equivalent in its core)" bans
  local n
  for n in 0 100000 1000000; do
    mkdir -p "$RUN/bans-$n/state"
    [ "$n" -gt 0 ] && "$PRELOAD_BIN" "$RUN/bans-$n/state" "$n" 10.0.0.0 >&2
    portcullis_start "bans-$n" "" '[[route]]
path = "/"
service = "origin"' none 1
    row "$n" "$(measure /)" ""
    stop_target
  done
}

axis_credentials() {
  header "Cached Basic credentials (filled by one request per credential, then one credential under load)" credentials
  local n
  cat > "$RUN/fill.lua" <<'EOF'
local b = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  return ((s:gsub('.', function(x) local r, c = '', x:byte() for i = 8, 1, -1 do r = r .. (c % 2 ^ i - c % 2 ^ (i - 1) > 0 and '1' or '0') end return r end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x) if #x < 6 then return '' end local c = 0 for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end return b:sub(c + 1, c + 1) end) .. ({ '', '==', '=' })[#s % 3 + 1])
end
local i = 0
local limit = tonumber(os.getenv("FILL"))
request = function()
  i = i + 1
  if i > limit then i = 1 end
  return wrk.format("GET", "/", { ["Authorization"] = "Basic " .. b64("u" .. i .. ":pw") })
end
EOF
  for n in ${CREDENTIALS:-1000 100000 1000000}; do
    portcullis_start "cred-$n" "" '[[route]]
path = "/"
service = "origin"' basic 1
    # One request per credential (a little over N requests: wrk runs by time).
    local secs=$(( n / 20000 + 2 ))
    FILL=$n taskset -c "$LOAD_CPUS" wrk -t1 -c64 -d"${secs}s" -s "$RUN/fill.lua" "http://$HOST:$PROXY_PORT/" >"$RUN/fill-$n.txt"
    row "$n" "$(measure / -H "Authorization: Basic $(printf 'u1:pw' | base64 -w0)")" ""
    stop_target
  done
}

axis_body() {
  header "Request body size (POST, Content-Length)" "body"
  local n
  for n in 0 4096 1048576; do
    printf 'wrk.method = "POST"\nwrk.body = string.rep("x", %s)\n' "$n" > "$RUN/body-$n.lua"
    portcullis_start "body-$n" "" '[[route]]
path = "/"
service = "origin"' none 1
    local mine; mine=$(measure / -s "$RUN/body-$n.lua"); stop_target
    nginx_start "nginx-body-$n" "" "" 1
    local theirs; theirs=$(measure / -s "$RUN/body-$n.lua"); stop_target
    row "$n B" "$mine" "$theirs"
  done
}

axis_pool() {
  header "Upstream servers per pool (round robin)" servers
  local n
  for n in 1 10 100; do
    portcullis_start "pool-$n" "" '[[route]]
path = "/"
service = "origin"' none "$n"
    local mine; mine=$(measure /); stop_target
    nginx_start "nginx-pool-$n" "" "" "$n"
    local theirs; theirs=$(measure /); stop_target
    row "$n" "$mine" "$theirs"
  done
}

axis_conns() {
  header "Client connections (64 busy, the rest idle keep-alive after one request)" connections
  local n idle_pid
  for n in 64 1000 10000; do
    portcullis_start "conns-$n" "" '[[route]]
path = "/"
service = "origin"' none 1
    local mine theirs
    idle_pid=""
    if [ "$n" -gt 64 ]; then
      taskset -c "$LOAD_CPUS" python3 "$BENCH/lib/idle_conns.py" "$HOST" "$PROXY_PORT" $((n - 64)) 600 >"$RUN/idle-$n.log" 2>&1 &
      idle_pid=$!; PIDS+=("$idle_pid")
      grep -q ready <(timeout 120 tail -f "$RUN/idle-$n.log") || die "idle connections not ready: $(cat "$RUN/idle-$n.log")"
    fi
    mine=$(measure /)
    [ -n "$idle_pid" ] && stop_pid "$idle_pid"
    stop_target
    nginx_start "nginx-conns-$n" "" "" 1
    if [ "$n" -gt 64 ]; then
      taskset -c "$LOAD_CPUS" python3 "$BENCH/lib/idle_conns.py" "$HOST" "$PROXY_PORT" $((n - 64)) 600 >"$RUN/idle-nginx-$n.log" 2>&1 &
      idle_pid=$!; PIDS+=("$idle_pid")
      grep -q ready <(timeout 120 tail -f "$RUN/idle-nginx-$n.log") || die "idle connections not ready"
    fi
    theirs=$(measure /)
    [ -n "$idle_pid" ] && stop_pid "$idle_pid"
    stop_target
    row "$n" "$mine" "$theirs"
  done
}

echo "### How cost grows (bench/growth.sh, DURATION=$DURATION REPS=$REPS, commit $(git -C "$BENCH/.." rev-parse --short HEAD))"
for axis in "${AXES[@]}"; do "axis_$axis"; done
