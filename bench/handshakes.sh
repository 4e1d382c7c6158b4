#!/usr/bin/env bash
# Full TLS handshakes per second (no session resumption): `openssl s_time -new` against
# nginx (TLS termination) and Portcullis, each pinned alone on PROXY_CPUS, the client on
# LOAD_CPUS. Runs once with the harness's RSA-2048 certificate (both targets use it) and
# once with Portcullis's own default (a generated ECDSA P-256 certificate).
#
#   bench/handshakes.sh            # DURATION (10 s) per measurement, REPS (3), median reported
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
source "$BENCH/lib/common.sh"
DURATION="${DURATION:-10}"; REPS="${REPS:-3}"; NICE="${NICE:--20}"
RUN="${RUN:-$BENCH/.run}/handshakes"; rm -rf "$RUN"; mkdir -p "$RUN"
export RUN
source "$BENCH/lib/standalone.sh"


CLIENTS="${CLIENTS:-4}"   # parallel s_time processes, so the target (not one client's latency) is the limit

measure() { # $1 label $2 port $3 pid -> prints "label handshakes/s proxy_us_per_handshake"
  local label=$1 port=$2 pid=$3 rep out n secs t0 t1 rates=() cpus=()
  for rep in $(seq "$REPS"); do
    t0=$(cpu_ticks "$pid")
    local clients=()
    for c in $(seq "$CLIENTS"); do
      nice -n "$NICE" taskset -c "$LOAD_CPUS" openssl s_time -connect "$HOST:$port" -new -time "$DURATION" > "$RUN/s_time.$c" 2>/dev/null &
      clients+=("$!")
    done
    wait "${clients[@]}"
    t1=$(cpu_ticks "$pid")
    n=0; secs=$DURATION
    for c in $(seq "$CLIENTS"); do
      out=$(grep 'connections in .* real seconds' "$RUN/s_time.$c" | head -1)
      n=$(( n + $(echo "$out" | awk '{print $1}') ))
    done
    rates+=("$(python3 -c "print(round($n/$secs))")")
    cpus+=("$(python3 -c "import os;print(round(($t1-$t0)/os.sysconf('SC_CLK_TCK')*1e6/max($n,1)))")")
  done
  printf '| %s | %s | %s | %s |\n' "$label" \
    "$(printf '%s\n' "${rates[@]}" | sort -n | sed -n "$(( (REPS + 1) / 2 ))p")" \
    "$(printf '%s\n' "${rates[@]}" | sort -n | paste -sd/ -)" \
    "$(printf '%s\n' "${cpus[@]}" | sort -n | sed -n "$(( (REPS + 1) / 2 ))p")"
}

PORTCULLIS_BIN="${PORTCULLIS_BIN:-$PWD/target/release/portcullis}"
source "$BENCH/targets/nginx-tls.sh"; prepare; start nginx-tls "$PROXY_CPUS" "${CMD[@]}"; NGINX_PID=$LAST_PID
source "$BENCH/targets/portcullis-tls-noauth.sh"; prepare; start portcullis-tls "$PROXY_CPUS" "${CMD[@]}"; PC_PID=$LAST_PID
# Portcullis with its own generated ECDSA P-256 certificate (no [tls] section).
mkdir -p "$RUN/pc-ec"
sed '/^\[tls\]/,/^key = /d; s/18205/18206/; s/127.0.0.1:18126/127.0.0.1:18127/' "$RUN/portcullis-tls-noauth/portcullis.toml" \
  | sed "s#$RUN/portcullis-tls-noauth/state#$RUN/pc-ec/state#" > "$RUN/pc-ec/portcullis.toml"
start portcullis-ec "$PROXY_CPUS" "$PORTCULLIS_BIN" serve --config "$RUN/pc-ec/portcullis.toml"; PC_EC_PID=$LAST_PID
# An origin for the proxies (not used by s_time, which only handshakes).
UP_PREFIX=$(origin_conf upstream "$UPSTREAM_PORT"); start upstream "$UPSTREAM_CPUS" nginx -p "$UP_PREFIX" -c "$UP_PREFIX/nginx.conf" -g 'daemon off;'
wait_port 18201; wait_port 18205; wait_port 18206
echo "| target | full handshakes/s (median, $CLIENTS parallel s_time clients) | all reps | target CPU µs/handshake |"
echo "|---|---|---|---|"
measure "nginx, RSA-2048" 18201 "$NGINX_PID"
measure "Portcullis, RSA-2048" 18205 "$PC_PID"
measure "Portcullis, ECDSA P-256 (default self-signed)" 18206 "$PC_EC_PID"
