#!/usr/bin/env bash
# CPU profile of one target under one load: `perf record` of the target's process while the
# load runs, folded stacks and a flame graph (SVG, inferno) written to OUT.
#
#   cargo install inferno           # inferno-collapse-perf, inferno-flamegraph
#   bench/profile.sh portcullis-noauth h1 docs/flamegraphs/h1-noauth
#
# TARGET is one of bench/targets/*.sh, SCENARIO h1 | h1-4k | h2-mux; DURATION (8) seconds of
# load. Same layout as run.sh: target on PROXY_CPUS, origin and load on the other core.
# Writes OUT.svg and OUT.folded (the folded stacks, for inferno-diff-folded).
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
source "$BENCH/lib/common.sh"
TARGET=${1:?target}; SCENARIO=${2:?scenario}; OUT=${3:?output path without extension}
DURATION="${DURATION:-8}"; CONNS="${CONNS:-64}"; NICE="${NICE:-0}"; REPS=1
RUN="${RUN:-$BENCH/.run}/profile"; rm -rf "$RUN"; mkdir -p "$RUN"
export RUN
source "$BENCH/lib/standalone.sh"
command -v perf >/dev/null || die "perf not installed"
command -v inferno-flamegraph >/dev/null || die "cargo install inferno"

UP_PREFIX=$(origin_conf upstream "$UPSTREAM_PORT")
start upstream "$UPSTREAM_CPUS" nginx -p "$UP_PREFIX" -c "$UP_PREFIX/nginx.conf" -g 'daemon off;'
wait_http "http://$HOST:$UPSTREAM_PORT/" || die "origin did not start"
AUTH=0; H2_URL=""; CMD=()
# shellcheck disable=SC1090
source "$BENCH/targets/$TARGET.sh"
prepare
start "$TARGET" "$PROXY_CPUS" "${CMD[@]}"; PID=$LAST_PID
wait_http "$H1_URL/" || die "target did not start (log: $RUN/$TARGET.log)"
AUTH_HDR=${AUTH_HEADER:-$GOOD_AUTH}
case $SCENARIO in
  h1) LOAD=(wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Authorization: $AUTH_HDR" "$H1_URL/") ;;
  h1-4k) LOAD=(wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Authorization: $AUTH_HDR" "$H1_URL/4k") ;;
  h2-mux) LOAD=(h2load -t1 -D "$DURATION" -c4 -m$(( CONNS / 4 )) -H "authorization: $AUTH_HDR" "${H2_URL:-$H1_URL}/") ;;
  *) die "unknown scenario $SCENARIO" ;;
esac
# Warm up (pools, caches), then record while the load runs.
taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d2s -H "Authorization: $AUTH_HDR" "$H1_URL/" >/dev/null
mkdir -p "$(dirname "$OUT")"
if [ "${SYSCALLS:-0}" = 1 ]; then
  # Syscalls per request instead of a profile: OUT.syscalls.
  EVENTS=$(printf 'syscalls:sys_enter_%s,' read write writev readv recvfrom sendto sendmsg recvmsg epoll_wait epoll_pwait futex sched_yield clock_gettime)
  perf stat -x, -e "${EVENTS%,}" -p "$(pid_tree "$PID" | tr -s " " ",")" -o "$OUT.syscalls" -- sleep "$DURATION" &
  PERF=$!
  taskset -c "$LOAD_CPUS" "${LOAD[@]}" > "$RUN/load.txt"
  wait "$PERF"
  REQS=$(awk '/requests in|succeeded,/ {print $1; exit}' "$RUN/load.txt")
  log "requests: $REQS"; awk -F, -v r="$REQS" '$1 ~ /^[0-9]+$/ && $1 > 0 {printf "%-40s %8.3f per request\n", $3, $1 / r}' "$OUT.syscalls"
  exit 0
fi
perf record -F 1999 -g --call-graph dwarf,16384 -p "$(pid_tree "$PID" | tr -s " " ",")" -o "$RUN/perf.data" -- sleep "$DURATION" 2>"$RUN/perf.log" &
PERF=$!
taskset -c "$LOAD_CPUS" "${LOAD[@]}" > "$RUN/load.txt"
wait "$PERF"
perf script -i "$RUN/perf.data" 2>/dev/null | inferno-collapse-perf > "$OUT.folded"
inferno-flamegraph --title "$TARGET, $SCENARIO ($(git -C "$BENCH/.." rev-parse --short HEAD))" --width 1600 --minwidth 2 < "$OUT.folded" > "$OUT.svg"
log "wrote $OUT.svg ($(wc -l < "$OUT.folded") stacks); load: $(grep -E 'Requests/sec|finished in' "$RUN/load.txt" | head -1)"
