#!/usr/bin/env bash
# Cluster benchmark (issue 6), against a real redis-server on loopback:
#  1. h1 keep-alive req/s and CPU per request of Portcullis with Basic auth cached, state store
#     embedded vs Redis (same run, reps alternate), and Redis commands per proxied request
#     (INFO stats before/after: target 0 for cached traffic);
#  2. ban propagation across 3 peers: N bans set by hand on peer A, each polled from the
#     banned source on B and C until refused (examples/ban_propagation.rs): p50/p99/max.
# The measured edge is pinned alone on PROXY_CPUS; wrk, origin and Redis share LOAD_CPUS.
#
#   cargo build --release --example ban_propagation && cargo build --release
#   bench/cluster.sh         # DURATION (10) REPS (3) CONNS (64) BANS (1000)
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
source "$BENCH/lib/common.sh"
DURATION="${DURATION:-10}"; REPS="${REPS:-3}"; CONNS="${CONNS:-64}"; NICE="${NICE:--20}"; BANS="${BANS:-1000}"
RUN="${RUN:-$BENCH/.run}/cluster"; rm -rf "$RUN"; mkdir -p "$RUN"
export RUN
source "$BENCH/lib/standalone.sh"
PORTCULLIS_BIN="${PORTCULLIS_BIN:-$PWD/target/release/portcullis}"
PROPAGATION_BIN="${PROPAGATION_BIN:-$PWD/target/release/examples/ban_propagation}"
[ -x "$PROPAGATION_BIN" ] || die "cargo build --release --example ban_propagation"
command -v redis-server >/dev/null || die "redis-server missing (apt-get install redis-server)"
REDIS_PORT=18379
redis_commands() { redis-cli -p "$REDIS_PORT" INFO stats | awk -F: '/^total_commands_processed/ {print $2+0}'; }

UP_PREFIX=$(origin_conf upstream "$UPSTREAM_PORT"); start upstream "$UPSTREAM_CPUS" nginx -p "$UP_PREFIX" -c "$UP_PREFIX/nginx.conf" -g 'daemon off;'
wait_http "http://$HOST:$UPSTREAM_PORT/" || die "origin did not start"
start redis "$LOAD_CPUS" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no
wait_port "$REDIS_PORT" || die "redis did not start"

# 1. embedded vs redis, Basic cached.
source "$BENCH/targets/portcullis.sh"; prepare
start embedded "$PROXY_CPUS" "${CMD[@]}"; EMB_PID=$LAST_PID; EMB_URL=$H1_URL
wait_http "$EMB_URL/" || die "embedded target did not start"
stop_pid "$EMB_PID"
portcullis_config "$RUN/redis-target" "[[listener]]
name = \"http\"
address = \"$HOST:18109\"
tls = false"
sed -i 's/^address = "127.0.0.1:18124"/address = "127.0.0.1:18130"/' "$RUN/redis-target/portcullis.toml"
printf '[cluster]\nstore = "redis"\nredis_url = "redis://127.0.0.1:%s/0"\npeer = "bench"\n' "$REDIS_PORT" >> "$RUN/redis-target/portcullis.toml"
declare -A PID URL
start embedded "$PROXY_CPUS" "${CMD[@]}"; PID[embedded]=$LAST_PID; URL[embedded]=$EMB_URL
start redis-store "$PROXY_CPUS" "$PORTCULLIS_BIN" serve --config "$RUN/redis-target/portcullis.toml"; PID[redis]=$LAST_PID; URL[redis]="http://$HOST:18109"
for t in embedded redis; do wait_http "${URL[$t]}/" || die "$t target did not start"; done
declare -A RPS CPU OPS
for t in embedded redis; do   # warm-up: the first request of the credential validates once
  nice -n "$NICE" taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d2s -H "Authorization: $GOOD_AUTH" "${URL[$t]}/" >/dev/null
done
for rep in $(seq "$REPS"); do
  for t in embedded redis; do
    c0=$(redis_commands); t0=$(cpu_ticks "${PID[$t]}")
    out=$(nice -n "$NICE" taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Authorization: $GOOD_AUTH" "${URL[$t]}/")
    t1=$(cpu_ticks "${PID[$t]}"); c1=$(redis_commands)
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    RPS[$t]+="$(echo "$out" | awk '/Requests\/sec/ {print int($2)}') "
    CPU[$t]+="$(python3 -c "import os;print(f'{($t1-$t0)/os.sysconf(\"SC_CLK_TCK\")*1e6/max($n,1):.1f}')") "
    OPS[$t]+="$(python3 -c "print(f'{($c1-$c0)/max($n,1):.4f}')") "
    log "rep $rep $t: $(echo "$out" | awk '/Requests\/sec/ {print $2}') req/s, redis commands $((c1 - c0)) for $n requests"
  done
done
# shellcheck disable=SC2086
{
  echo "| state store | h1 req/s (median of $REPS) | all reps | proxy CPU µs/req | Redis commands per request |"
  echo "|---|---:|---|---:|---:|"
  for t in embedded redis; do
    echo "| $t | $(printf '%s\n' ${RPS[$t]} | median) | $(printf '%s\n' ${RPS[$t]} | sort -n | paste -sd/ -) | $(printf '%s\n' ${CPU[$t]} | median) | $(printf '%s\n' ${OPS[$t]} | median) |"
  done
  e=$(printf '%s\n' ${RPS[embedded]} | median); r=$(printf '%s\n' ${RPS[redis]} | median)
  echo
  echo "Redis vs embedded: **$(python3 -c "print(f'{$r/$e:.2f}')")×** the req/s (target ≥ 0.95×). wrk -t1 -c$CONNS, Basic credential validated once then cached, ${DURATION} s per rep."
}
stop_pid "${PID[embedded]}"; stop_pid "${PID[redis]}"

# 2. Ban propagation across three peers.
mkdir -p "$RUN/site"; echo ok > "$RUN/site/index.html"
for i in 0 1 2; do
  d="$RUN/peer$i"; mkdir -p "$d"
  cat > "$d/portcullis.toml" <<EOC
[server]
name = "localhost"
state_dir = "$d/state"
log_dir = "$d/logs"
[[listener]]
name = "http"
address = "$HOST:1814$i"
[admin]
address = "$HOST:1815$i"
token = "bench-admin-token"
[[service]]
name = "site"
static_dir = "$RUN/site"
[[route]]
path = "/"
service = "site"
[cluster]
store = "redis"
redis_url = "redis://127.0.0.1:$REDIS_PORT/0"
peer = "peer$i"
EOC
  start "peer$i" "$PROXY_CPUS" "$PORTCULLIS_BIN" serve --config "$d/portcullis.toml"
done
for i in 0 1 2; do wait_http "http://$HOST:1814$i/" || die "peer$i did not start"; done
sleep 1
echo
echo "Ban propagation (\`examples/ban_propagation.rs\`, 3 peers on one Redis, all three pinned on core $PROXY_CPUS):"
echo
echo "- $(nice -n "$NICE" taskset -c "$LOAD_CPUS" "$PROPAGATION_BIN" "$HOST:18150" bench-admin-token "$BANS" 127.77.0.1 "$HOST:18141" "$HOST:18142")"
echo "- target: p99 ≤ 250 ms"
