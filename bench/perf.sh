#!/usr/bin/env bash
# Runs every benchmark of Portcullis against its peers in one go and writes
# docs/PERFORMANCE.md (the measured tables plus the commands that produced them; the
# analysis on top comes from bench/PERFORMANCE.head.md).
#
#   cargo build --release --example preload_bans && cargo build --release && bench/perf.sh
#
# Knobs are those of run.sh (DURATION, REPS, ...). Everything runs on loopback and stops
# what it started.
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
cd "$ROOT"
export PORTCULLIS_BIN="${PORTCULLIS_BIN:-$ROOT/target/release/portcullis}"
[ -x "$PORTCULLIS_BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
CLEAR="direct nginx nginx-lua haproxy portcullis-noauth portcullis portcullis-jwt portcullis-bans"
TLS="direct-tls nginx-tls nginx-lua-tls haproxy-tls portcullis-tls-noauth portcullis-tls"
if [ "${1:-}" = --report ]; then
  OUT="$2"   # re-render docs/PERFORMANCE.md from an earlier run's results
else
  OUT="$BENCH/results/perf-$(date +%Y%m%d-%H%M%S)"; mkdir -p "$OUT"
  export RESULTS_DIR="$OUT"
  git rev-parse --short HEAD > "$OUT/commit.txt"   # the binary under test is built from it
  "$BENCH/run.sh" $CLEAR 2>"$OUT/clear.log"
  "$BENCH/run.sh" $TLS 2>"$OUT/tls.log"
  "$BENCH/handshakes.sh" > "$OUT/handshakes.md" 2>"$OUT/handshakes.log"
  "$BENCH/ws_idle.sh" > "$OUT/ws_idle.md" 2>"$OUT/ws_idle.log"
  "$BENCH/flood.sh" > "$OUT/flood.md" 2>"$OUT/flood.log"
fi

{
  cat "$BENCH/PERFORMANCE.head.md"
  echo
  echo "## Measured tables (run $(basename "$OUT"), binary built from commit $(cat "$OUT/commit.txt" 2>/dev/null || echo unknown))"
  echo
  echo "Commands: \`cargo build --release && bench/perf.sh\`, which runs"
  echo "\`bench/run.sh $(cat "$OUT"/2*/meta.txt | sed -n 's/^targets: //p' | head -1)\`, \`bench/run.sh $(cat "$OUT"/2*/meta.txt | sed -n 's/^targets: //p' | tail -1)\`, \`bench/handshakes.sh\`, \`bench/ws_idle.sh\` and \`bench/flood.sh\`"
  echo "(harness parameters: $(sed -n 's/^params: //p' "$(ls -d "$OUT"/2*/ | head -1)meta.txt"); medians; proxy alone on core 0, load generator and origin on core 1)."
  echo
  echo "### Cleartext (HTTP/1.1 keep-alive and close, HTTP/2 prior knowledge)"
  echo
  first=$(ls -d "$OUT"/2*/ | head -1); second=$(ls -d "$OUT"/2*/ | tail -1)
  sed -n '/^### Overview/,$p' "$first/table.md"
  echo
  echo "### TLS termination"
  echo
  sed -n '/^### Overview/,$p' "$second/table.md"
  echo
  echo "### Full TLS handshakes (\`openssl s_time -new\`, no resumption)"
  echo
  cat "$OUT/handshakes.md"
  echo
  echo "### Memory: idle and 10,000 idle proxied WebSockets"
  echo
  cat "$OUT/ws_idle.md"
  if [ -s "$OUT/flood.md" ]; then
    echo
    echo "### Flood from banned sources (\`bench/flood.sh\`)"
    echo
    cat "$OUT/flood.md"
  fi
} > "$ROOT/docs/PERFORMANCE.md"
echo "wrote docs/PERFORMANCE.md (raw results in $OUT)" >&2
