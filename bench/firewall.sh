#!/usr/bin/env bash
# The dynamic firewall's costs (issue 14), in a network namespace this script creates:
#  - apply at start (listeners bound -> rules table in the kernel: their ports open), the ban
#    table with BANS bans loaded after it, and the update of the open ports when the
#    listeners stop while the BANS bans are in their sets (firewall.log's took_ms times each
#    `nft -f` transaction);
#  - a whole replacement of each table timed by hand with `nft -f` on what the kernel holds,
#    REPS times.
#
#   cargo build --release --example preload_bans && bench/firewall.sh
#   BANS [100000]  REPS [5]
# Needs root, nft and ip. Everything it starts is stopped and the namespace deleted on exit.
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
BIN="${PORTCULLIS_BIN:-$PWD/target/release/portcullis}"
PRELOAD_BIN="${PRELOAD_BIN:-$PWD/target/release/examples/preload_bans}"
BANS="${BANS:-100000}"; REPS="${REPS:-5}"
NS="pc-fwbench-$$"
DIR=$(mktemp -d)
EDGE_PID=""
cleanup() {
  [ -n "$EDGE_PID" ] && kill "$EDGE_PID" 2>/dev/null && wait "$EDGE_PID" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
[ -x "$BIN" ] && [ -x "$PRELOAD_BIN" ] || { echo "build first: cargo build --release --example preload_bans" >&2; exit 1; }

ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add veth-e type veth peer name veth-a
ip -n "$NS" link set veth-e up
mkdir -p "$DIR/state" "$DIR/logs" "$DIR/www"
cat > "$DIR/edge.toml" <<EOC
[server]
name = "localhost"
state_dir = "$DIR/state"
log_dir = "$DIR/logs"
[[listener]]
name = "web"
address = "0.0.0.0:18443"
[[listener]]
name = "web6"
address = "[::]:18443"
[[service]]
name = "site"
static_dir = "$DIR/www"
[[route]]
path = "/"
service = "site"
[firewall]
enabled = true
interface = "veth-e"
table = "pc_bench"
EOC
"$PRELOAD_BIN" "$DIR/state" "$BANS" 11.0.0.0 >/dev/null

echo "## Firewall: ruleset replacement with $BANS bans ($(nft --version))"
echo
echo "| rep | start: bind -> ports open (ms) | start: ban table loaded (ms) | listeners stop: open ports updated, bans in place (ms) | nft -f rules table (ms) | nft -f ban table (ms) |"
echo "|---:|---:|---:|---:|---:|---:|"
took() { grep "$1" "$DIR/logs/firewall.log" | tail -1 | grep -o "took_ms=[0-9]*" | cut -d= -f2; }
replace_by_hand() { # $1 = table: replace it with what it holds now, timed
  ip netns exec "$NS" nft list table inet "$1" > "$DIR/listed.nft"
  { echo "table inet $1 {}"; echo "delete table inet $1"; cat "$DIR/listed.nft"; } > "$DIR/replace.nft"
  local t0 t1; t0=$(date +%s%N); ip netns exec "$NS" nft -f "$DIR/replace.nft"; t1=$(date +%s%N)
  echo $(( (t1 - t0) / 1000000 ))
}
for rep in $(seq 1 "$REPS"); do
  : > "$DIR/logs/firewall.log"
  ip netns exec "$NS" "$BIN" serve --config "$DIR/edge.toml" >/dev/null 2>&1 &
  EDGE_PID=$!
  for _ in $(seq 1 600); do grep -q "pc_bench_bans reason=start" "$DIR/logs/firewall.log" 2>/dev/null && break; sleep 0.05; done
  ports_ms=$(took "table=pc_bench reason=start"); bans_ms=$(took "pc_bench_bans reason=start")
  bans_in=$(grep -o "pc_bench_bans reason=start bans=[0-9]*" "$DIR/logs/firewall.log" | grep -o "bans=[0-9]*" | cut -d= -f2)
  rules_hand=$(replace_by_hand pc_bench); bans_hand=$(replace_by_hand pc_bench_bans)
  kill -TERM "$EDGE_PID"; wait "$EDGE_PID" 2>/dev/null || true; EDGE_PID=""
  stop_ms=$(took "reason=listeners-stopped")
  echo "| $rep | ${ports_ms:-?} | ${bans_ms:-?} (bans=${bans_in:-?}) | ${stop_ms:-?} | $rules_hand | $bans_hand |"
done
