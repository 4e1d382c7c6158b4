#!/usr/bin/env bash
# Log shipping under faults: lines LOST and lines DUPLICATED at a real rsyslogd receiver (mutual
# TLS imtcp + imrelp over TLS, as in bench/ship.sh), measured in one run on this machine, for
#   - Portcullis, the real binary (`portcullis serve`) with [logging.ship] protocol tls and relp;
#     each line is an HTTP request to its plain listener, GET /r/<n> (no route: a 404, still one
#     access.log line = one shipped message);
#   - rsyslog's own forwarder (a second rsyslogd fed the same numbered lines over plain imtcp),
#     omfwd (gtls, octet-counted) and omrelp (TLS), each with an in-memory action queue
#     (queue.type="LinkedList") and with the disk-assisted recipe of rsyslog's "reliable
#     forwarding" guide (LinkedList + queue.filename + queue.saveOnShutdown="on" +
#     queue.maxDiskSpace, action.resumeRetryCount="-1", action.resumeInterval="1").
# Scenarios (fresh receiver file, fresh sender queue each):
#   sender-kill9    receiver down; N lines fed and queued in the sender (Portcullis: status
#                   `queued`; rsyslog: impstats says imtcp submitted all N); sender kill -9;
#                   receiver started, sender started again.
#   receiver-kill9  N lines fed at RATE lines/s; once KILL_AT of them are in the receiver's file
#                   the receiver gets kill -9, stays down DOWN s (lines keep coming), restarts.
#   receiver-stop   the same with a graceful stop (SIGTERM, waits for it to exit).
# Then it waits until every line arrived and nothing moved for 3 s (Portcullis: also its queue
# empty), or nothing new arrived for QUIET s (at most MAXWAIT s), and counts by the /r/<n>
# number: lost = numbers 0..N-1 never written, duplicated = lines written - distinct numbers.
# The receiver keeps rsyslog's default in-memory main queue; imrelp answers "200 OK" once a
# message is in that queue, so a receiver kill -9 can also lose a line the sender was told was
# delivered. RECEIVER_QUEUE=Direct makes the receiver write each message before answering, so
# the RELP columns then show the senders alone. The receiver's file starts each line with the
# time it received it (timegenerated): written before the fault, or after the restart.
#
#   bash bench/ship-faults.sh                                    # everything (~5 min)
#   N=2000 SCENARIOS=receiver-kill9 SENDERS="portcullis-tls omfwd-ll" bash bench/ship-faults.sh
#   KEEP=1 bash bench/ship-faults.sh     # keep the work directory (receiver files per run)
#   REPS=5 N=3000 SCENARIOS=receiver-kill9 RECEIVER_QUEUE=Direct bash bench/ship-faults.sh
#
# Senders: portcullis-tls portcullis-relp omfwd-ll omfwd-da omrelp-ll omrelp-da (also accepted:
# omfwd-disk, omrelp-disk — queue.type="Disk", the research notes' kill -9 set-up).
# Everything on 127.0.0.1. Holds /tmp/portcullis-quiet.faults while it runs (waits first while
# another /tmp/portcullis-quiet.* exists); stops every process it started.
set -euo pipefail
N=${N:-10000}
RATE=${RATE:-2000}
KILL_AT=${KILL_AT:-0.3}
DOWN=${DOWN:-3}
QUIET=${QUIET:-15}
MAXWAIT=${MAXWAIT:-120}
SCENARIOS=${SCENARIOS:-sender-kill9 receiver-kill9 receiver-stop}
SENDERS=${SENDERS:-portcullis-tls portcullis-relp omfwd-ll omfwd-da omrelp-ll omrelp-da}
REPS=${REPS:-1}
RECEIVER_QUEUE=${RECEIVER_QUEUE:-}
RQ=${RECEIVER_QUEUE:-"rsyslog default"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /tmp/ship-faults.XXXXXX)
RPID= SPID= FPID=
MARK=/tmp/portcullis-quiet.faults
TOKEN=ship-faults-token

stop_pid() { # pid signal: signal it and reap it (at most 15 s, then SIGKILL)
  local p=$1 sig=${2:-TERM} i
  [ -n "$p" ] || return 0
  {  # (bash's "Killed" notices go to /dev/null)
    kill -s "$sig" "$p" || return 0
    for i in $(seq 1 150); do kill -0 "$p" || break; sleep 0.1; done
    if kill -0 "$p"; then echo "  (pid $p still alive 15 s after SIG$sig: SIGKILL)" >&3; kill -9 "$p" || true; fi
    wait "$p" || true
  } 3>&2 2>/dev/null
}
cleanup() {
  stop_pid "$FPID" KILL; stop_pid "$SPID" TERM; stop_pid "$RPID" TERM
  rm -f "$MARK"
  if [ -n "${KEEP:-}" ]; then echo "work directory kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
while ls /tmp/portcullis-quiet.* >/dev/null 2>&1 && [ ! -e "$MARK" ]; do
  echo "waiting: $(ls /tmp/portcullis-quiet.* | tr '\n' ' ')" >&2; sleep 15
done
touch "$MARK"
(cd "$ROOT" && cargo build --release -q)
BIN=$ROOT/target/release/portcullis

# --- PKI: a CA, the receiver (localhost), the senders' client certificate (edge1.example.com).
cd "$W"
. "$ROOT/bench/lib/ship_pki.sh"
P_TLS=$(free_port); P_RELP=$(free_port); P_FEED=$(free_port); P_HTTP=$(free_port); P_ADMIN=$(free_port)

listening() { ss -Hltn "sport = :$1" | grep -q .; }
wait_listen() { # port what: at most 20 s
  for _ in $(seq 1 200); do listening "$1" && return 0; sleep 0.1; done
  echo "  $2 not listening on $1 after 20 s" >&2; return 1
}

# --- Feeders: numbered lines, /r/<n>. HTTP requests to the edge, or syslog lines over TCP.
cat > feed_http.py <<'PY'
import http.client, sys, time
port, n, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
t0 = time.monotonic(); bad = retried = 0
for k in range(n):
    if rate:
        time.sleep(max(0, t0 + k / rate - time.monotonic()))
    for attempt in range(3):
        try:
            c.request("GET", "/r/%d" % k); r = c.getresponse(); r.read()
            if r.status != 404: bad += 1
            break
        except (OSError, http.client.HTTPException):
            retried += 1; c.close(); c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        bad += 1
dt = time.monotonic() - t0
print(f"  fed {n} requests in {dt:.1f} s ({n/dt:.0f}/s), {bad} not answered 404, {retried} retried", file=sys.stderr)
PY
cat > feed_tcp.py <<'PY'
import socket, sys, time
port, n, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port))
line = "<134>1 2026-12-06T00:00:00.123456Z edge1.example.com portcullis 1 access - 2026-12-06T00:00:00.123Z 127.0.0.1 127.0.0.1:8080 GET /r/%d HTTP/1.1 404 10 - - 0.000\n"
t0 = time.monotonic(); chunk = max(int(rate // 100), 1) if rate else 512
for k in range(0, n, chunk):
    if rate:
        time.sleep(max(0, t0 + k / rate - time.monotonic()))
    s.sendall("".join(line % i for i in range(k, min(k + chunk, n))).encode())
s.close()
dt = time.monotonic() - t0
print(f"  fed {n} lines in {dt:.1f} s ({n/dt:.0f}/s)", file=sys.stderr)
PY
cat > count.py <<'PY'
import re, sys
path, n = sys.argv[1], int(sys.argv[2])
seen = {}; total = 0
try:
    for line in open(path, errors="replace"):
        m = re.search(r" GET /r/(\d+) HTTP/", line)
        if m:
            total += 1; k = int(m.group(1)); seen[k] = seen.get(k, 0) + 1
except FileNotFoundError:
    pass
distinct = sum(1 for k in seen if 0 <= k < n)
if len(sys.argv) > 3:   # details: the lost numbers (as ranges) and how many arrived twice or more
    lost = [k for k in range(n) if k not in seen]; ranges = []
    for k in lost:
        if ranges and ranges[-1][1] == k - 1: ranges[-1][1] = k
        else: ranges.append([k, k])
    r = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:8]) + (" ..." if len(ranges) > 8 else "")
    print(f"lost numbers: [{r}]; numbers written more than once: {sum(1 for c in seen.values() if c > 1)}")
else:
    print(distinct, total)
PY

# --- The receiver: imtcp over mutual TLS and imrelp over mutual TLS, one output file per run.
receiver_conf() { # dir
  mkdir -p "$1/rwork"
  cat > "$1/receiver.conf" <<EOF
global(workDirectory="$1/rwork" defaultNetstreamDriver="gtls" defaultNetstreamDriverCAFile="$W/ca.pem"
       defaultNetstreamDriverCertFile="$W/server.pem" defaultNetstreamDriverKeyFile="$W/server.key"
       parser.escapeControlCharactersOnReceive="off")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/name" permittedPeer=["edge1.example.com"])
input(type="imtcp" address="127.0.0.1" port="$P_TLS" ruleset="in")
module(load="imrelp")
input(type="imrelp" address="127.0.0.1" port="$P_RELP" ruleset="in" tls="on" tls.caCert="$W/ca.pem"
      tls.myCert="$W/server.pem" tls.myPrivKey="$W/server.key" tls.authMode="name" tls.permittedPeer=["edge1.example.com"])
template(name="t" type="string" string="%TIMEGENERATED:::date-rfc3339% %HOSTNAME% %APP-NAME% %MSGID% %STRUCTURED-DATA% %msg%\n")
ruleset(name="in") { action(type="omfile" file="$1/received.log" template="t") }
EOF
  [ -z "$RECEIVER_QUEUE" ] || echo "main_queue(queue.type=\"$RECEIVER_QUEUE\")" >> "$1/receiver.conf"
}
receiver_start() { # dir
  rm -f "$1/receiver.pid"
  rsyslogd -n -f "$1/receiver.conf" -i "$1/receiver.pid" >> "$1/receiver.out" 2>&1 &
  RPID=$!
  wait_listen "$P_TLS" receiver && wait_listen "$P_RELP" receiver
}

# --- The senders.
sender_conf() { # dir sender
  local d=$1 s=$2 q
  case $s in
    portcullis-*)
      mkdir -p "$d/edge"
      cat > "$d/edge/portcullis.toml" <<EOF
[server]
name = "edge1.example.com"
state_dir = "$d/edge/state"
log_dir = "$d/edge/logs"
[[listener]]
name = "http"
address = "127.0.0.1:$P_HTTP"
tls = false
[admin]
address = "127.0.0.1:$P_ADMIN"
token = "$TOKEN"
[logging.ship]
address = "127.0.0.1:$([ "$s" = portcullis-relp ] && echo "$P_RELP" || echo "$P_TLS")"
protocol = "${s#portcullis-}"
server_name = "localhost"
ca = "$W/ca.pem"
client_cert = "$W/client.pem"
client_key = "$W/client.key"
EOF
      return ;;
  esac
  case $s in
    *-ll) q='queue.type="LinkedList" queue.size="2000000"' ;;
    *-da) q='queue.type="LinkedList" queue.size="2000000" queue.filename="fwdq" queue.saveOnShutdown="on" queue.maxDiskSpace="1g"' ;;
    *-disk) q='queue.type="Disk" queue.size="2000000" queue.filename="fwdq" queue.saveOnShutdown="on" queue.maxDiskSpace="1g"' ;;
    *) echo "unknown sender $s" >&2; exit 2 ;;
  esac
  if [ "${s%%-*}" = omfwd ]; then
    action="action(type=\"omfwd\" name=\"fwd\" target=\"127.0.0.1\" port=\"$P_TLS\" protocol=\"tcp\" tcp_framing=\"octet-counted\"
           template=\"RSYSLOG_SyslogProtocol23Format\" streamDriver=\"gtls\" streamDriverMode=\"1\"
           streamDriverAuthMode=\"x509/name\" streamDriverPermittedPeers=\"localhost\"
           action.resumeRetryCount=\"-1\" action.resumeInterval=\"1\" $q)"
  else
    action="action(type=\"omrelp\" name=\"fwd\" target=\"127.0.0.1\" port=\"$P_RELP\" template=\"RSYSLOG_SyslogProtocol23Format\"
           tls=\"on\" tls.caCert=\"$W/ca.pem\" tls.myCert=\"$W/client.pem\" tls.myPrivKey=\"$W/client.key\"
           tls.authMode=\"name\" tls.permittedPeer=[\"localhost\"]
           action.resumeRetryCount=\"-1\" action.resumeInterval=\"1\" $q)"
  fi
  mkdir -p "$d/swork"
  cat > "$d/sender.conf" <<EOF
global(workDirectory="$d/swork" defaultNetstreamDriverCAFile="$W/ca.pem"
       defaultNetstreamDriverCertFile="$W/client.pem" defaultNetstreamDriverKeyFile="$W/client.key")
module(load="impstats" interval="1" format="json" log.syslog="off" log.file="$d/sender-stats.log")
module(load="imtcp")
module(load="omrelp")
input(type="imtcp" name="feed" address="127.0.0.1" port="$P_FEED" ruleset="fwd")
ruleset(name="fwd") { $action }
EOF
}
sender_start() { # dir sender
  case $2 in
    portcullis-*)
      "$BIN" serve --config "$1/edge/portcullis.toml" >> "$1/edge/out" 2>&1 &
      SPID=$!
      wait_listen "$P_HTTP" portcullis && wait_listen "$P_ADMIN" "portcullis admin" ;;
    *)
      rm -f "$1/sender.pid"
      rsyslogd -n -f "$1/sender.conf" -i "$1/sender.pid" >> "$1/sender.out" 2>&1 &
      SPID=$!
      wait_listen "$P_FEED" "rsyslog sender" ;;
  esac
}
feed() { # sender rate (in the background: FPID)
  case $1 in
    portcullis-*) timeout $((MAXWAIT + 60)) python3 feed_http.py "$P_HTTP" "$N" "$2" & ;;
    *) timeout $((MAXWAIT + 60)) python3 feed_tcp.py "$P_FEED" "$N" "$2" & ;;
  esac
  FPID=$!
}
feed_wait() {
  local rc=0
  wait "$FPID" || rc=$?
  FPID=
  [ $rc = 0 ] || echo "  feeder ended with status $rc" >&2
}
edge_queued() { # the edge's shipping queue (lines), or "?" when it does not answer
  curl -s -m 2 -H "authorization: Bearer $TOKEN" "http://127.0.0.1:$P_ADMIN/api/v1/status" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["shipping"]["queued"])' 2>/dev/null || echo "?"
}
sender_queued() { # dir sender: wait (at most 30 s) until the sender holds all N lines; say what it saw
  # (Portcullis: status `queued`; rsyslog: impstats, imtcp `submitted` and the action queue's size)
  local q last= same=0
  case $2 in
    portcullis-*)
      for _ in $(seq 1 60); do   # queued counts every shipped line (error.log too): >= N and steady 1 s
        q=$(edge_queued)
        if [ "$q" != "?" ] && [ "$q" -ge "$N" ] && [ "$q" = "$last" ]; then same=$((same + 1)); else same=0; fi
        last=$q; [ $same -ge 2 ] && break; sleep 0.5
      done
      echo "  sender holds: portcullis status queued=$q" >&2 ;;
    *)
      for _ in $(seq 1 60); do
        q=$(python3 - "$1/sender-stats.log" <<'PY' 2>/dev/null || echo "? ?"
import json, sys
sub = size = "?"
for line in open(sys.argv[1]):
    try: o = json.loads(line[line.index("{"):])
    except ValueError: continue
    if o.get("origin") == "imtcp" and o.get("name", "").startswith("feed("): sub = o.get("submitted")
    if o.get("name") == "fwd queue": size = o.get("size")
print(sub, size)
PY
)
        if [ "${q%% *}" = "$N" ] && [ "${q##* }" -ge "$N" ] 2>/dev/null && [ "$q" = "$last" ]; then break; fi
        last=$q; sleep 0.5
      done
      echo "  sender holds: rsyslog impstats imtcp submitted=${q%% *}, action queue size=${q##* }" >&2 ;;
  esac
}
counts() { python3 count.py "$1/received.log" "$N"; }
settle() { # dir sender: until all N arrived and 3 s passed without change (Portcullis: queue empty too),
           # or QUIET s without a new line, at most MAXWAIT s
  local t0 last= changed now c q=0 why
  t0=$(date +%s); changed=$t0
  while :; do
    c=$(counts "$1"); now=$(date +%s)
    [ "$c" != "$last" ] && { last=$c; changed=$now; }
    case $2 in portcullis-*) q=$(edge_queued) ;; esac
    if [ "${c%% *}" -ge "$N" ] && [ "$q" = 0 ] && [ $((now - changed)) -ge 3 ]; then why="all $N arrived"; break; fi
    if [ "$q" = 0 ] && [ $((now - changed)) -ge "$QUIET" ]; then why="no new line for ${QUIET} s"; break; fi
    if [ $((now - t0)) -ge "$MAXWAIT" ]; then why="gave up after ${MAXWAIT} s"; break; fi
    sleep 0.5
  done
  case $2 in portcullis-*) why="$why, edge queue $q" ;; esac
  echo "  settled: $why; distinct/written: $c" >&2
}

declare -A LOST DUP
run() { # scenario sender rep
  local sc=$1 s=$2 d="$W/$1-$2-$3" have c t at
  mkdir -p "$d"
  echo "== $sc / $s$([ "$REPS" = 1 ] || echo " (run $3)")" >&2
  receiver_conf "$d"; sender_conf "$d" "$s"
  case $sc in
    sender-kill9)
      sender_start "$d" "$s"
      feed "$s" 0; feed_wait
      sender_queued "$d" "$s"
      stop_pid "$SPID" KILL; SPID=
      receiver_start "$d"
      sender_start "$d" "$s" ;;
    receiver-kill9|receiver-stop)
      receiver_start "$d"
      sender_start "$d" "$s"
      feed "$s" "$RATE"
      have=0 t=$(date +%s) at=$(python3 -c "print(int($N * $KILL_AT))")
      until [ "$have" -ge "$at" ]; do
        if [ $(($(date +%s) - t)) -ge 60 ]; then echo "  only $have lines in the receiver after 60 s" >&2; break; fi
        sleep 0.05; have=$(counts "$d"); have=${have%% *}
      done
      if [ $sc = receiver-kill9 ]; then stop_pid "$RPID" KILL; else stop_pid "$RPID" TERM; fi
      RPID=
      echo "  receiver $([ $sc = receiver-kill9 ] && echo 'killed -9' || echo stopped) with $(counts "$d" | cut -d' ' -f1) lines written; down ${DOWN} s" >&2
      sleep "$DOWN"
      receiver_start "$d"
      feed_wait ;;
  esac
  settle "$d" "$s"
  stop_pid "$SPID" TERM; SPID=
  stop_pid "$RPID" TERM; RPID=
  c=$(counts "$d")
  local lost=$((N - ${c%% *})) dup=$((${c##* } - ${c%% *}))
  LOST[$sc,$s]=${LOST[$sc,$s]:+${LOST[$sc,$s]}/}$lost; DUP[$sc,$s]=${DUP[$sc,$s]:+${DUP[$sc,$s]}/}$dup
  echo "  lost $lost, duplicated $dup; $(python3 count.py "$d/received.log" "$N" details)" >&2
}

echo "N=$N lines per run, RATE=$RATE lines/s (receiver faults), receiver killed/stopped at $KILL_AT of N, down ${DOWN} s, receiver main queue: $RQ" >&2
for sc in $SCENARIOS; do for r in $(seq 1 "$REPS"); do for s in $SENDERS; do run "$sc" "$s" "$r"; done; done; done

name() { case $1 in
  portcullis-tls) echo "portcullis tls" ;; portcullis-relp) echo "portcullis relp" ;;
  omfwd-ll) echo "omfwd LinkedList" ;; omfwd-da) echo "omfwd disk-assisted" ;; omfwd-disk) echo "omfwd Disk" ;;
  omrelp-ll) echo "omrelp LinkedList" ;; omrelp-da) echo "omrelp disk-assisted" ;; omrelp-disk) echo "omrelp Disk" ;;
  *) echo "$1" ;; esac; }
echo
echo "Lines lost / duplicated at the receiver, of N=$N per run$([ "$REPS" = 1 ] || echo " (each of $REPS runs: a/b/...)"); receiver main queue: $RQ; $(date -u +%Y-%m-%dT%H:%MZ), rsyslog $(rsyslogd -v | head -1 | awk '{print $2}')"
echo
printf '| scenario |'; for s in $SENDERS; do printf ' %s |' "$(name "$s")"; done; echo
printf '| --- |'; for s in $SENDERS; do printf ' --- |'; done; echo
for sc in $SCENARIOS; do
  printf '| %s |' "$sc"; for s in $SENDERS; do printf ' %s lost, %s dup |' "${LOST[$sc,$s]}" "${DUP[$sc,$s]}"; done; echo
done
