#!/usr/bin/env bash
# RSS of Portcullis idle and with WS_CONNS (10000) idle proxied WebSockets, on loopback.
#   bench/ws_idle.sh
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
export RUN="${RUN:-$BENCH/.run}/ws-idle"; rm -rf "$RUN"; mkdir -p "$RUN"
export PORTCULLIS_BIN="${PORTCULLIS_BIN:-$PWD/target/release/portcullis}"
# 10,000 tunnels need 20,000+ descriptors in the edge (client + upstream side); where the hard
# limit is 20,000 (this machine), 9,900 tunnels is the most that fits, and the report says so.
ulimit -n "$(ulimit -Hn)"
export WS_CONNS="${WS_CONNS:-$(( $(ulimit -Hn) >= 20200 ? 10000 : 9900 ))}"
exec timeout 300 python3 "$BENCH/lib/ws_idle.py"
