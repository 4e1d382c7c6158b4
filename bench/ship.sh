#!/usr/bin/env bash
# Log shipping: Portcullis (RFC 5425 over TLS, RELP over TLS) beside rsyslog's own forwarder
# (omfwd over gnutls with octet counting, omrelp over TLS), the same N lines to the same real
# rsyslogd receiver (mutual TLS), one run each, on this machine. Prints messages per second
# and the sender's CPU time per message (user + system of the sending process).
#
#   N=200000 bash bench/ship.sh
#   PROTOCOLS=relp PEERS= bash bench/ship.sh        # just Portcullis over RELP
#   RATE=2000 N=40000 bash bench/ship.sh            # every sender fed 2,000 lines/s (every 10 ms)
#
# The sender runs on core 0, the receiver and the line feeder on core 1. Portcullis's figure
# includes formatting each message and writing it to its disk queue (fdatasync every 10 ms);
# rsyslog's includes receiving the line on imtcp and its in-memory (LinkedList) queue — its
# cheapest set-up, which loses everything queued on kill -9 (docs/logging.md). Holds
# /tmp/portcullis-quiet.ship while it runs; stops everything it started.
set -euo pipefail
N=${N:-200000}
RATE=${RATE:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /tmp/ship-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -f /tmp/portcullis-quiet.ship
}
trap cleanup EXIT INT TERM
while ls /tmp/portcullis-quiet.* >/dev/null 2>&1 && [ ! -e /tmp/portcullis-quiet.ship ]; do sleep 15; done
(cd "$ROOT" && cargo bench --bench ship --no-run -q 2>/dev/null)
BIN=$(ls -t "$ROOT"/target/release/deps/ship-* | grep -v '\.d$' | head -1)
touch /tmp/portcullis-quiet.ship

# --- PKI: a CA, the receiver (localhost), the sender's client certificate (edge1.example.com).
cd "$W"
. "$ROOT/bench/lib/ship_pki.sh"
P_TLS=$(free_port); P_RELP=$(free_port); P_FEED=$(free_port)

# --- The receiver: imtcp over mutual TLS and imrelp over mutual TLS, one output file.
mkdir -p rwork swork
cat > receiver.conf <<EOF
global(workDirectory="$W/rwork" defaultNetstreamDriver="gtls" defaultNetstreamDriverCAFile="$W/ca.pem"
       defaultNetstreamDriverCertFile="$W/server.pem" defaultNetstreamDriverKeyFile="$W/server.key"
       parser.escapeControlCharactersOnReceive="off")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/name" permittedPeer=["edge1.example.com"])
input(type="imtcp" address="127.0.0.1" port="$P_TLS" ruleset="in")
module(load="imrelp")
input(type="imrelp" address="127.0.0.1" port="$P_RELP" ruleset="in" tls="on" tls.caCert="$W/ca.pem"
      tls.myCert="$W/server.pem" tls.myPrivKey="$W/server.key" tls.authMode="name" tls.permittedPeer=["edge1.example.com"])
template(name="t" type="string" string="%HOSTNAME% %MSGID% %STRUCTURED-DATA% %msg%\n")
ruleset(name="in") { action(type="omfile" file="$W/received.log" template="t") }
EOF
taskset -c 1 rsyslogd -n -f receiver.conf -i "$W/receiver.pid" > receiver.out 2>&1 &
PIDS+=($!)
sleep 1
lines() { [ -e received.log ] && wc -l < received.log || echo 0; }
wait_for() { # until the receiver has $1 lines (at most 300 s)
  for _ in $(seq 1 3000); do [ "$(lines)" -ge "$1" ] && return 0; sleep 0.1; done
  echo "receiver has $(lines) of $1 lines" >&2; return 1
}
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # clock ticks (100 Hz)

# --- Portcullis.
for proto in ${PROTOCOLS-tls relp}; do
  port=$P_TLS; [ $proto = relp ] && port=$P_RELP
  before=$(lines)
  SHIP_PROTOCOL=$proto SHIP_PORT=$port SHIP_DIR="$W" SHIP_N=$N SHIP_RATE=$RATE taskset -c 0 ${WRAP:-} "$BIN" | tee run.out | grep -v start_unix_ms
  wait_for $((before + N))
  t1=$(date +%s%3N); t0=$(sed -n 's/^start_unix_ms=//p' run.out)
  python3 -c "n=$N; dt=($t1-$t0)/1000; print(f'portcullis $proto: all {n} in the receiver\'s file after {dt:.2f} s = {n/dt:.0f} msg/s end to end')"
done

# --- rsyslog's forwarder, fed the same lines over plain TCP.
cat > feed.py <<'PY'
import socket, sys, time
port, n, rate = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
chunk = max(rate // 100, 1) if rate else 512
s = socket.create_connection(("127.0.0.1", port))
buf = []
due = time.monotonic()
for k in range(n):
    buf.append(b"<134>1 2026-12-06T00:00:00.123456Z edge1.example.com portcullis 1 access - 2026-12-06T00:00:00.123Z 203.0.113.7 desktop.example.com GET /finesse/api/User/agent%d HTTP/1.1 200 512 10.0.0.5:8082 finesse 0.004\n" % k)
    if len(buf) == chunk:
        if rate:
            due += 0.01
            time.sleep(max(0, due - time.monotonic()))
        s.sendall(b"".join(buf)); buf = []
if buf: s.sendall(b"".join(buf))
s.close()
PY
for proto in ${PEERS-omfwd omrelp}; do
  if [ $proto = omfwd ]; then
    action="action(type=\"omfwd\" target=\"127.0.0.1\" port=\"$P_TLS\" protocol=\"tcp\" tcp_framing=\"octet-counted\"
           template=\"RSYSLOG_SyslogProtocol23Format\" streamDriver=\"gtls\" streamDriverMode=\"1\"
           streamDriverAuthMode=\"x509/name\" streamDriverPermittedPeers=\"localhost\"
           action.resumeRetryCount=\"-1\" queue.type=\"LinkedList\" queue.size=\"2000000\")"
  else
    action="action(type=\"omrelp\" target=\"127.0.0.1\" port=\"$P_RELP\" template=\"RSYSLOG_SyslogProtocol23Format\"
           tls=\"on\" tls.caCert=\"$W/ca.pem\" tls.myCert=\"$W/client.pem\" tls.myPrivKey=\"$W/client.key\"
           tls.authMode=\"name\" tls.permittedPeer=[\"localhost\"]
           action.resumeRetryCount=\"-1\" queue.type=\"LinkedList\" queue.size=\"2000000\")"
  fi
  cat > sender.conf <<EOF
global(workDirectory="$W/swork" defaultNetstreamDriverCAFile="$W/ca.pem"
       defaultNetstreamDriverCertFile="$W/client.pem" defaultNetstreamDriverKeyFile="$W/client.key")
module(load="imtcp")
module(load="omrelp")
input(type="imtcp" address="127.0.0.1" port="$P_FEED" ruleset="fwd")
ruleset(name="fwd") { $action }
EOF
  taskset -c 0 rsyslogd -n -f sender.conf -i "$W/sender.pid" > sender.out 2>&1 &
  spid=$!
  PIDS+=($spid)
  sleep 1.5
  before=$(lines); c0=$(cpu_of $spid); t0=$(date +%s.%N)
  taskset -c 1 python3 feed.py "$P_FEED" "$N" "$RATE"
  wait_for $((before + N))
  t1=$(date +%s.%N); c1=$(cpu_of $spid)
  python3 -c "n=$N; dt=$t1-$t0; cpu=($c1-$c0)/100; print(f'rsyslog $proto: all {n} in the receiver\'s file after {dt:.2f} s = {n/dt:.0f} msg/s end to end; sender CPU {cpu:.2f} s = {cpu*1e6/n:.2f} us/msg')"
  kill $spid; wait $spid 2>/dev/null || true
done
echo "receiver lines: $(lines)"
rm -rf "$W"
