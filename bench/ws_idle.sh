#!/usr/bin/env bash
# RSS of Portcullis idle and with WS_CONNS (10000) idle proxied WebSockets, on loopback.
#   bench/ws_idle.sh
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
export RUN="${RUN:-$BENCH/.run}/ws-idle"; rm -rf "$RUN"; mkdir -p "$RUN"
export PORTCULLIS_BIN="${PORTCULLIS_BIN:-$PWD/target/release/portcullis}"
ulimit -n 65536
exec timeout 300 python3 "$BENCH/lib/ws_idle.py"
