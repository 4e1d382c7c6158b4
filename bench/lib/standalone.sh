# Helpers shared by the standalone measurements (flood.sh, cluster.sh, jwt_uncached.sh,
# handshakes.sh): start pinned processes, stop them all on exit, read a process tree's CPU.
# Sourced after lib/common.sh; uses $RUN, $NICE and $REPS.
# shellcheck shell=bash

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do stop_pid "$p"; done; }
trap cleanup EXIT

# start NAME CPUS CMD... -> LAST_PID (output in $RUN/NAME.log; stopped on exit)
start() {
  local name=$1 cpus=$2; shift 2
  nice -n "$NICE" taskset -c "$cpus" "$@" >"$RUN/$name.log" 2>&1 &
  LAST_PID=$!; PIDS+=("$LAST_PID")
}

# CPU ticks (user + system) used so far by a process and its descendants.
cpu_ticks() { local p t=0; for p in $(pid_tree "$1"); do t=$(( t + $(awk '{print $14+$15}' /proc/"$p"/stat 2>/dev/null || echo 0) )); done; echo "$t"; }

# The median of the numbers on stdin (REPS of them).
median() { sort -n | sed -n "$(( (REPS + 1) / 2 ))p"; }
