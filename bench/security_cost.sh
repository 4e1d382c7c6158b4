#!/usr/bin/env bash
# What the security hardening of issue 10 costs (canonical request view, one authority and
# one credential per request, the shield's per-source admission of uncached credential
# checks): the same scenarios through two Portcullis binaries in one run — BASE_BIN (built
# from the commit before, e.g. 9d11233) and NEW_BIN (default target/release/portcullis) —
# beside nginx as the anchor. Each binary is started alone on PROXY_CPUS for its turn; reps
# are interleaved (base, new, base, new…) so a drift of the machine hits both alike.
#
# Scenarios (wrk -t1 h1 keep-alive, one source address: 127.0.0.1):
#   noauth   — plain proxying (path/host canonicalisation on every request)
#   basic    — one Basic credential, cached (the common case: never waits for admission)
#   jwt-new  — ES256, every request a token never seen before (every request is an uncached
#              credential check from one source: admitted one at a time)
#
#   BASE_BIN=/path/to/old/portcullis bench/security_cost.sh   # DURATION (10) REPS (3) CONNS (64) JWT_TOKENS (300000)
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
source "$BENCH/lib/common.sh"
DURATION="${DURATION:-10}"; REPS="${REPS:-3}"; CONNS="${CONNS:-64}"; NICE="${NICE:--20}"; WARMUP="${WARMUP:-2}"
export JWT_TOKENS="${JWT_TOKENS:-300000}"
NEW_BIN="${NEW_BIN:-$PWD/target/release/portcullis}"
[ -x "${BASE_BIN:-}" ] || die "set BASE_BIN to the binary built from the commit before the change"
[ -x "$NEW_BIN" ] || die "no $NEW_BIN (cargo build --release)"
RUN="${RUN:-$BENCH/.run}/security-cost"; rm -rf "$RUN"; mkdir -p "$RUN"
export RUN
source "$BENCH/lib/standalone.sh"

UP_PREFIX=$(origin_conf upstream "$UPSTREAM_PORT")
start upstream "$UPSTREAM_CPUS" nginx -p "$UP_PREFIX" -c "$UP_PREFIX/nginx.conf" -g 'daemon off;'
wait_http "http://$HOST:$UPSTREAM_PORT/" || die "origin did not start"

# nginx as the anchor (stays up).
unset -f prepare; CMD=(); source "$BENCH/targets/nginx.sh"; prepare >/dev/null
start nginx "$PROXY_CPUS" "${CMD[@]}"; NGINX_PID=$LAST_PID; NGINX_URL=$H1_URL
wait_http "$NGINX_URL/" || die "nginx did not start"

# Each target is prepared once (config, keys, tokens) and reused by both binaries: each
# binary's turn is a fresh process with empty caches, so a token is new to it either way.
declare -A PREPARED_CMD PREPARED_URL PREPARED_HEADER PREPARED_READY
TOKENS=""
# launch TARGET BIN -> PID, URL, HEADER
launch() {
  local target=$1 bin=$2
  if [ -z "${PREPARED_CMD[$target]:-}" ]; then
    unset DESC H1_URL CMD AUTH_HEADER READY_PATH TOKENS_FILE; unset -f prepare; CMD=()
    source "$BENCH/targets/$target.sh"
    prepare >/dev/null
    PREPARED_CMD[$target]="${CMD[*]:1}"; PREPARED_URL[$target]=$H1_URL
    PREPARED_HEADER[$target]=${AUTH_HEADER:-$GOOD_AUTH}; PREPARED_READY[$target]=${READY_PATH:-/}
    if [ -n "${TOKENS_FILE:-}" ] && [ -s "$TOKENS_FILE" ]; then TOKENS=$TOKENS_FILE; fi
  fi
  # shellcheck disable=SC2086
  start "$target" "$PROXY_CPUS" "$bin" ${PREPARED_CMD[$target]}
  PID=$LAST_PID; URL=${PREPARED_URL[$target]}; HEADER=${PREPARED_HEADER[$target]}
  wait_http "$URL${PREPARED_READY[$target]}" || die "$target did not start with $bin (log: $RUN/$target.log)"
}

# measure SCENARIO PID URL HEADER OUT -> "req/s cpu-µs/req p99"
measure() {
  local scenario=$1 pid=$2 url=$3 header=$4 out=$5 wrk t0 t1 n
  wrk=(nice -n "$NICE" taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" --latency)
  t0=$(cpu_ticks "$pid")
  if [ "$scenario" = jwt-new ]; then
    TOKENS_FILE="$TOKENS" "${wrk[@]}" -d"${DURATION}s" -s "$BENCH/lua/rotate_tokens.lua" "$url/" > "$out"
  else
    "${wrk[@]}" -d"${DURATION}s" -H "Authorization: $header" "$url/" > "$out"
  fi
  t1=$(cpu_ticks "$pid")
  n=$(awk '/requests in/ {print $1}' "$out")
  echo "$(awk '/Requests\/sec/ {print int($2)}' "$out") $(python3 -c "import os;print(f'{($t1-$t0)/os.sysconf(\"SC_CLK_TCK\")*1e6/max($n,1):.1f}')") $(awk '$1=="99%" {print $2}' "$out")"
}

declare -A TARGET=([noauth]=portcullis-noauth [basic]=portcullis [jwt-new]=portcullis-jwt)
declare -A RPS CPU P99
for rep in $(seq "$REPS"); do
  read -r r c p < <(measure noauth "$NGINX_PID" "$NGINX_URL" "$GOOD_AUTH" "$RUN/wrk.$rep.nginx")
  RPS[nginx]+="$r "; CPU[nginx]+="$c "; P99[nginx]+="$p "
  log "rep $rep nginx: $r req/s"
  for scenario in noauth basic jwt-new; do
    for which in base new; do
      bin=$BASE_BIN; [ "$which" = new ] && bin=$NEW_BIN
      launch "${TARGET[$scenario]}" "$bin"
      if [ "$scenario" = jwt-new ]; then
        TOKENS_FILE="$TOKENS" nice -n "$NICE" taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -s "$BENCH/lua/rotate_tokens.lua" "$URL/" >/dev/null
      else
        nice -n "$NICE" taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -H "Authorization: $HEADER" "$URL/" >/dev/null
      fi
      read -r r c p < <(measure "$scenario" "$PID" "$URL" "$HEADER" "$RUN/wrk.$rep.$scenario.$which")
      key="$scenario/$which"; RPS[$key]+="$r "; CPU[$key]+="$c "; P99[$key]+="$p "
      log "rep $rep $key: $r req/s, $c µs/req"
      stop_pid "$PID"
    done
  done
done

med() { printf '%s\n' $1 | median; }
echo "| scenario | before: req/s | after: req/s | after/before req/s | before: CPU µs/req | after: CPU µs/req | after/before CPU | p99 before / after |"
echo "|---|---:|---:|---:|---:|---:|---:|---|"
for scenario in noauth basic jwt-new; do
  b=$(med "${RPS[$scenario/base]}"); a=$(med "${RPS[$scenario/new]}")
  cb=$(med "${CPU[$scenario/base]}"); ca=$(med "${CPU[$scenario/new]}")
  pb=$(printf '%s\n' ${P99[$scenario/base]} | sort | sed -n "$(( (REPS + 1) / 2 ))p"); pa=$(printf '%s\n' ${P99[$scenario/new]} | sort | sed -n "$(( (REPS + 1) / 2 ))p")
  echo "| $scenario | $b | $a | $(python3 -c "print(f'{$a/max($b,1):.2f}')") | $cb | $ca | $(python3 -c "print(f'{$ca/max($cb,0.1):.2f}')") | $pb / $pa |"
done
echo
echo "nginx (plain proxy, same run): $(med "${RPS[nginx]}") req/s, $(med "${CPU[nginx]}") µs/req."
echo "wrk -t1 -c$CONNS keep-alive, ${DURATION} s per rep, median of $REPS; jwt-new: $JWT_TOKENS pre-signed ES256 tokens."
