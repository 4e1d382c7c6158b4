#!/usr/bin/env bash
# End-to-end JWT verification cost (edge-auth benchmark): wrk h1 keep-alive through
# Portcullis where EVERY request carries a token the edge has never seen (pre-signed with the
# JWKS key, unique `jti`, rotated by lua/rotate_tokens.lua), ES256 and RS256 — beside, in the
# same run, nginx and Portcullis as plain proxies and Portcullis with one cached token. Each
# target is pinned alone on PROXY_CPUS; wrk and the nginx origin share LOAD_CPUS. Median of
# REPS; a warm-up run first (with fresh tokens too).
#
#   bench/jwt_uncached.sh     # DURATION (10) REPS (3) CONNS (64) JWT_TOKENS (600000 per algorithm)
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
source "$BENCH/lib/common.sh"
DURATION="${DURATION:-10}"; REPS="${REPS:-3}"; CONNS="${CONNS:-64}"; NICE="${NICE:--20}"; WARMUP="${WARMUP:-2}"
export JWT_TOKENS="${JWT_TOKENS:-600000}"
RUN="${RUN:-$BENCH/.run}/jwt-uncached"; rm -rf "$RUN"; mkdir -p "$RUN"
export RUN
source "$BENCH/lib/standalone.sh"

UP_PREFIX=$(origin_conf upstream "$UPSTREAM_PORT")
start upstream "$UPSTREAM_CPUS" nginx -p "$UP_PREFIX" -c "$UP_PREFIX/nginx.conf" -g 'daemon off;'
wait_http "http://$HOST:$UPSTREAM_PORT/" || die "origin did not start"

LABELS=(); declare -A URL PID HDR TOK
add() { # $1 target file, $2 label, [$3 label using fresh tokens]
  unset DESC H1_URL CMD AUTH_HEADER READY_PATH TOKENS_FILE; unset -f prepare; CMD=()
  source "$BENCH/targets/$1.sh"; prepare >/dev/null
  start "$1" "$PROXY_CPUS" "${CMD[@]}"
  local pid=$LAST_PID
  wait_http "$H1_URL${READY_PATH:-/}" || die "$1 did not start (log: $RUN/$1.log)"
  LABELS+=("$2"); PID[$2]=$pid; URL[$2]=$H1_URL; HDR[$2]=${AUTH_HEADER:-$GOOD_AUTH}; TOK[$2]=""
  if [ -n "${3:-}" ]; then
    [ -s "$TOKENS_FILE" ] || die "$1: no tokens in $TOKENS_FILE"
    LABELS+=("$3"); PID[$3]=$pid; URL[$3]=$H1_URL; HDR[$3]=""; TOK[$3]=$TOKENS_FILE
  fi
  log "$1 ready (pid $pid)"
}
add nginx "nginx (plain proxy)"
add portcullis-noauth "Portcullis, no auth"
add portcullis-jwt "Portcullis, JWT ES256, one token (cached)" "Portcullis, JWT ES256, every token new"
add portcullis-jwt-rs256 "Portcullis, JWT RS256, one token (cached)" "Portcullis, JWT RS256, every token new"

run_wrk() { # $1 label $2 seconds $3 output
  local label=$1 wrk=(nice -n "$NICE" taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"$2s" --latency)
  if [ -n "${TOK[$label]}" ]; then
    TOKENS_FILE="${TOK[$label]}" "${wrk[@]}" -s "$BENCH/lua/rotate_tokens.lua" "${URL[$label]}/" > "$3"
  else
    "${wrk[@]}" -H "Authorization: ${HDR[$label]}" "${URL[$label]}/" > "$3"
  fi
}
declare -A RPS CPU P99 NON2XX REUSED
for label in "${LABELS[@]}"; do run_wrk "$label" "$WARMUP" /dev/null; done
for rep in $(seq "$REPS"); do
  for label in "${LABELS[@]}"; do
    out="$RUN/wrk.$rep.${label//[^A-Za-z0-9]/_}"
    t0=$(cpu_ticks "${PID[$label]}"); run_wrk "$label" "$DURATION" "$out"; t1=$(cpu_ticks "${PID[$label]}")
    n=$(awk '/requests in/ {print $1}' "$out")
    RPS[$label]+="$(awk '/Requests\/sec/ {print int($2)}' "$out") "
    CPU[$label]+="$(python3 -c "import os;print(f'{($t1-$t0)/os.sysconf(\"SC_CLK_TCK\")*1e6/max($n,1):.1f}')") "
    P99[$label]+="$(awk '$1=="99%" {print $2}' "$out") "
    NON2XX[$label]=$(( ${NON2XX[$label]:-0} + $(awk '/Non-2xx/ {print $NF}' "$out" | tail -1 | grep -E '^[0-9]+$' || echo 0) ))
    grep -q "TOKENS REUSED" "$out" && REUSED[$label]=yes
    log "rep $rep $label: $(awk '/Requests\/sec/ {print $2}' "$out") req/s"
  done
done

echo "| target | req/s (median of $REPS) | all reps | proxy CPU µs/req | p99 | non-2xx |"
echo "|---|---:|---|---:|---:|---:|"
for label in "${LABELS[@]}"; do
  # shellcheck disable=SC2086
  echo "| $label${REUSED[$label]:+ ⚠ tokens reused} | $(printf '%s\n' ${RPS[$label]} | median) | $(printf '%s\n' ${RPS[$label]} | sort -n | paste -sd/ -) | $(printf '%s\n' ${CPU[$label]} | median) | $(printf '%s\n' ${P99[$label]} | sort | sed -n "$(( (REPS + 1) / 2 ))p") | ${NON2XX[$label]} |"
done
echo
echo "wrk -t1 -c$CONNS keep-alive, ${DURATION} s per rep; fresh-token rows: $JWT_TOKENS pre-signed tokens per algorithm, never reused unless flagged ⚠."
