#!/usr/bin/env bash
# Flood resilience (shield benchmark 2): legitimate keep-alive clients' req/s through
# Portcullis alone, then while FLOOD_SOURCES banned sources (127.64.0.0 upwards, banned in the
# state store before start) open new connections at FLOOD_RATE per second, each sending one
# request. Two modes: the edge refusing banned sources itself (accept-time 418), and with the
# nftables kernel mirror (`protection.nftables_set`, root only; the bench's own table
# `portcullis_bench`, deleted when the edge stops). The edge is pinned alone on PROXY_CPUS;
# wrk, the flooder and the nginx origin share LOAD_CPUS. Reps alternate quiet/flooded.
#
#   cargo build --release --example preload_bans --example flood
#   bench/flood.sh      # DURATION (10) REPS (3) CONNS (64) FLOOD_RATE (5000) FLOOD_SOURCES (100000)
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
source "$BENCH/lib/common.sh"
DURATION="${DURATION:-10}"; REPS="${REPS:-3}"; CONNS="${CONNS:-64}"; NICE="${NICE:--20}"
FLOOD_RATE="${FLOOD_RATE:-5000}"; FLOOD_SOURCES="${FLOOD_SOURCES:-100000}"
RUN="${RUN:-$BENCH/.run}/flood"; rm -rf "$RUN"; mkdir -p "$RUN"; : > "$RUN/flood-lines"
export RUN
source "$BENCH/lib/standalone.sh"
FLOOD_BIN="${FLOOD_BIN:-$PWD/target/release/examples/flood}"
[ -x "$FLOOD_BIN" ] || die "build the flooder: cargo build --release --example flood --example preload_bans"
reps() { printf '%s\n' "$@" | sort -n | paste -sd/ -; }

UP_PREFIX=$(origin_conf upstream "$UPSTREAM_PORT"); start upstream "$UPSTREAM_CPUS" nginx -p "$UP_PREFIX" -c "$UP_PREFIX/nginx.conf" -g 'daemon off;'
wait_http "http://$HOST:$UPSTREAM_PORT/" || die "origin did not start"
BANS="$FLOOD_SOURCES" BANS_BASE=127.64.0.0
export BANS BANS_BASE

# measure MODE_LABEL [extra config] -> one table row per condition, flood lines in $RUN/flood-lines
measure() {
  local label=$1 extra=${2:-} quiet=() flooded=() cpu_quiet=() cpu_flood=() rep mode t0 t1 rps busy q f
  RUN="$RUN/$label" ; mkdir -p "$RUN"
  source "$BENCH/targets/portcullis-bans.sh"; prepare >/dev/null
  [ -n "$extra" ] && printf '%s\n' "$extra" >> "$RUN/portcullis-bans/portcullis.toml"
  start portcullis "$PROXY_CPUS" "${CMD[@]}"; local pid=$LAST_PID
  wait_http "$H1_URL/" || die "portcullis did not start (log: $RUN/portcullis.log)"
  for rep in $(seq "$REPS"); do
    for mode in quiet flood; do
      t0=$(cpu_ticks "$pid")
      if [ "$mode" = flood ]; then
        nice -n "$NICE" taskset -c "$LOAD_CPUS" "$FLOOD_BIN" "${H1_URL#http://}" 127.64.0.0 "$FLOOD_SOURCES" "$FLOOD_RATE" "$(( DURATION + 1 ))" > "$RUN/flood.$rep" &
        local flood_pid=$!
        sleep 0.5
      fi
      nice -n "$NICE" taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" "$H1_URL/" > "$RUN/wrk.$mode.$rep"
      t1=$(cpu_ticks "$pid")
      rps=$(awk '/Requests\/sec/ {print int($2)}' "$RUN/wrk.$mode.$rep")
      busy=$(python3 -c "import os;print(round(($t1-$t0)/os.sysconf('SC_CLK_TCK')/$DURATION*100))")
      if [ "$mode" = flood ]; then
        wait "$flood_pid"; flooded+=("$rps"); cpu_flood+=("$busy"); echo "- $label: $(cat "$RUN/flood.$rep")" >> "$RUN/../flood-lines"
      else
        quiet+=("$rps"); cpu_quiet+=("$busy")
      fi
      log "$label rep $rep $mode: $rps req/s, edge CPU $busy%"
    done
  done
  stop_pid "$pid"
  q=$(printf '%s\n' "${quiet[@]}" | median); f=$(printf '%s\n' "${flooded[@]}" | median)
  echo "| $label | $q ($(reps "${quiet[@]}")) | $(printf '%s\n' "${cpu_quiet[@]}" | median) % | $f ($(reps "${flooded[@]}")) | $(printf '%s\n' "${cpu_flood[@]}" | median) % | **$(python3 -c "print(f'{$f/$q:.2f}')")×** |"
  RUN="${RUN%/"$label"}"
}

echo "| banned sources refused by | alone: req/s (all reps) | edge CPU | during the flood: req/s (all reps) | edge CPU | kept |"
echo "|---|---|---|---|---|---|"
measure "Portcullis (accept-time 418)"
if [ "$(id -u)" = 0 ] && command -v nft >/dev/null; then
  measure "the kernel (nftables mirror)" $'[protection]\nnftables_set = true\nnftables_table = "portcullis_bench"'
else
  echo "| the kernel (nftables mirror) | skipped: needs root and nft | | | | |"
fi
echo
echo "Legitimate clients: wrk -t1 -c$CONNS, keep-alive, ${DURATION} s per rep, median of $REPS. Target: kept ≥ 0.80×."
echo "Flood: $FLOOD_SOURCES banned sources from 127.64.0.0, $FLOOD_RATE new connections/s, one request each:"
cat "$RUN/flood-lines"
