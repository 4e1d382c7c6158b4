#!/usr/bin/env bash
# Memory per idle partner TLS connection (mutual TLS), Portcullis and Kamailio, on loopback:
#   bench/sip_tls_idle.sh [portcullis] [kamailio]      (SIP_CONNS=1000, PROXY_CPUS=0)
# Needs the SIP benchmark's test PKI and Kamailio config (SIPB, default ../shared/bench/sip) and
# a release build (PORTCULLIS_BIN, default target/release/portcullis). Prints one table row each.
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
export SIPB="${SIPB:-$(cd "$BENCH/../../shared/bench/sip" 2>/dev/null && pwd)}"
export PORTCULLIS_BIN="${PORTCULLIS_BIN:-$PWD/target/release/portcullis}"
export RUN="${RUN:-$BENCH/.run}/sip-tls-idle"; rm -rf "$RUN"; mkdir -p "$RUN"
ulimit -n "$(ulimit -Hn)"
echo "| target | idle TLS connections | PSS before KiB | PSS after KiB | PSS per connection KiB | RssAnon per connection KiB | opened in s |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for target in "${@:-portcullis kamailio}"; do
  for t in $target; do timeout 300 python3 "$BENCH/lib/sip_tls_idle.py" "$t"; done
done
