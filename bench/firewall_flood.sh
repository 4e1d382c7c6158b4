#!/usr/bin/env bash
# A random-source SYN flood against the edge, with Portcullis's own firewall ([firewall]) and,
# in the same run and namespaces, with the seed's iptables hardening written for iptables-nft
# (lib/seed_iptables.sh: the reverse proxy installer's basic hardening and per-port hashlimit)
# in front of the same edge without [firewall]. Per mode and rep, during FLOOD_SECONDS:
#   - softirq and system CPU of the machine (/proc/stat; the flood's packets are handled there),
#   - TCP handshakes per second completed from the load balancer (exempt in both) and from an
#     ordinary client (rate-limited in both) while the flood runs,
#   - SYNs the flood got answered (SYN-ACKs seen: what reached the listener),
#   - live conntrack entries in the edge's namespace when the flood ends and CONNTRACK_AFTER
#     seconds later (half-open entries of the flood: Portcullis gives admitted connections a
#     10-s half-open timeout, the kernel's defaults are 120 s and 60 s),
#   - Portcullis only: both tables replaced (admin `firewall apply`, firewall.log's took_ms)
#     before the flood and right after it, with the flood's entries in conntrack.
# Everything runs in two network namespaces this script creates (veth pair); the flood is
# hping3 --rand-source at FLOOD_INTERVAL (hping3 -i), pinned to core 1, the edge to core 0.
#
#   cargo build --release && bench/firewall_flood.sh
#   FLOOD_SECONDS [8]  FLOOD_INTERVAL [u20]  REPS [3]  CONNTRACK_AFTER [12]
#   FIREWALL_EXTRA: lines added to the edge's [firewall] (e.g. "hardening = false")
#   FLOOD_MSS [none]: the flood's SYNs carry this MSS option (hping3 --tcp-mss); by default
#   they carry none, as hping3's do, and both firewalls drop them as hardening (a real stack
#   always sends one) — with FLOOD_MSS=1460 the flood passes that rule and meets the limits.
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
BIN="${PORTCULLIS_BIN:-$PWD/target/release/portcullis}"
FLOOD_SECONDS="${FLOOD_SECONDS:-8}"; FLOOD_INTERVAL="${FLOOD_INTERVAL:-u20}"; REPS="${REPS:-3}"; CONNTRACK_AFTER="${CONNTRACK_AFTER:-12}"
E="pc-ffe-$$"; C="pc-ffc-$$"
EDGE4=198.51.100.1; CLIENT4=198.51.100.2; LB4=198.51.100.10; PORT=8080
DIR=$(mktemp -d)
EDGE_PID=""
cleanup() {
  [ -n "$EDGE_PID" ] && kill "$EDGE_PID" 2>/dev/null && wait "$EDGE_PID" 2>/dev/null || true
  ip netns del "$E" 2>/dev/null || true; ip netns del "$C" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for tool in hping3 iptables-nft nft nstat python3; do command -v "$tool" >/dev/null || { echo "$tool missing" >&2; exit 1; }; done

mkdir -p "$DIR/www" && echo hello > "$DIR/www/index.html"

config() { # $1 = name, $2 = extra sections
  mkdir -p "$DIR/$1/state" "$DIR/$1/logs"
  cat > "$DIR/$1/edge.toml" <<EOC
[server]
name = "localhost"
state_dir = "$DIR/$1/state"
log_dir = "$DIR/$1/logs"
[[listener]]
name = "web"
address = "0.0.0.0:$PORT"
[[service]]
name = "site"
static_dir = "$DIR/www"
[[route]]
path = "/"
service = "site"
$2
EOC
}
config portcullis "[admin]
address = \"127.0.0.1:18182\"
token = \"bench-admin-token\"
[firewall]
enabled = true
interface = \"veth-e\"
load_balancers = [\"$LB4\"]
${FIREWALL_EXTRA:-}"
config iptables ""

# Handshakes per second from one source address while the flood runs (connect, close).
handshakes() { # $1 = source
  ip netns exec "$C" taskset -c 1 python3 - "$1" "$EDGE4" "$PORT" "$FLOOD_SECONDS" <<'PY'
import socket, sys, time
src, dst, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
done = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    s = socket.socket(); s.settimeout(0.2)
    try:
        s.bind((src, 0)); s.connect((dst, port)); done += 1
    except OSError:
        pass
    finally:
        s.close()
print(f"{done / seconds:.0f}")
PY
}

# system, irq+softirq and total jiffies of the machine (/proc/stat: user nice system idle
# iowait irq softirq steal).
cpu_ticks() { awk '/^cpu /{print $4, $7+$8, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
# SYNs that reached a listener in the edge's namespace (request sockets or cookies made).
passive_opens() { ip netns exec "$E" nstat -az TcpPassiveOpens TcpExtSyncookiesSent 2>/dev/null | awk 'NR>1{n+=$2} END{print n+0}'; }
# SYNs the listener dropped (its queues full) in the edge's namespace.
listen_drops() { ip netns exec "$E" nstat -az TcpExtListenDrops 2>/dev/null | awk 'NR>1{n+=$2} END{print n+0}'; }
# Packets the kernel dropped before any rule saw them: the per-CPU input backlog was full
# (the softirq could not keep up; /proc/net/softnet_stat, second column, all CPUs).
# Portcullis only: replaces both tables through the admin API (`firewall apply`) and prints
# the time firewall.log recorded for it (ms): the cost of a replacement with what conntrack
# holds then (the rules table's `ct timeout` objects are detached from every entry).
replace_ms() {
  [ "$mode" = portcullis ] || { echo "-"; return; }
  ip netns exec "$E" curl -sf -o /dev/null -X POST -H "authorization: Bearer bench-admin-token" http://127.0.0.1:18182/api/v1/firewall/apply || { echo "?"; return; }
  grep "reason=admin-apply" "$DIR/portcullis/logs/firewall.log" | tail -1 | sed -n 's/.*took_ms=\([0-9]*\).*/\1/p'
}
# Live conntrack entries of the edge's namespace (the kernel lists no expired one).
conntrack_live() { ip netns exec "$E" sh -c 'wc -l < /proc/net/nf_conntrack'; }
backlog_drops() { local n=0 _a d _r; while read -r _a d _r; do n=$((n + 16#$d)); done < /proc/net/softnet_stat; echo "$n"; }

echo "## Random-source SYN flood ($FLOOD_SECONDS s, hping3 -i $FLOOD_INTERVAL --rand-source${FLOOD_MSS:+ --tcp-mss $FLOOD_MSS}): Portcullis [firewall] vs the seed's iptables hardening"
echo
echo "| mode | rep | flood SYNs sent | SYNs that reached the listener | listener drops | backlog drops | softirq+irq % of 2 cores | system % | LB handshakes/s | client handshakes/s | conntrack at flood end | ${CONNTRACK_AFTER} s later | tables replaced before / after the flood (ms) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
# Fresh namespaces for every run: a flood leaves conntrack entries behind (half-open
# connections to random sources) that would starve the next run's handshakes.
lab() {
  ip netns del "$E" 2>/dev/null || true; ip netns del "$C" 2>/dev/null || true
  ip netns add "$E"; ip netns add "$C"
  ip link add veth-e netns "$E" type veth peer name veth-a netns "$C"
  ip -n "$E" addr add "$EDGE4/24" dev veth-e
  ip -n "$C" addr add "$CLIENT4/24" dev veth-a; ip -n "$C" addr add "$LB4/24" dev veth-a
  for ns in "$E" "$C"; do ip -n "$ns" link set lo up; done
  ip -n "$E" link set veth-e up; ip -n "$C" link set veth-a up
}
for rep in $(seq 1 "$REPS"); do
  for mode in portcullis iptables; do
    lab
    [ "$mode" = iptables ] && ip netns exec "$E" bash "$BENCH/lib/seed_iptables.sh" veth-e "$PORT" "$LB4"
    ip netns exec "$E" taskset -c 0 "$BIN" serve --config "$DIR/$mode/edge.toml" >/dev/null 2>&1 &
    EDGE_PID=$!
    for _ in $(seq 1 200); do ip netns exec "$E" bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" 2>/dev/null && break; sleep 0.05; done
    sleep 0.5
    quiet_ms=$(replace_ms)
    opens0=$(passive_opens); ldrops0=$(listen_drops); bdrops0=$(backlog_drops)
    read -r s0 q0 t0 < <(cpu_ticks)
    ip netns exec "$C" taskset -c 1 timeout -s INT "$FLOOD_SECONDS" hping3 -S ${FLOOD_MSS:+--tcp-mss "$FLOOD_MSS"} -p "$PORT" -i "$FLOOD_INTERVAL" --rand-source "$EDGE4" >"$DIR/flood.txt" 2>&1 &
    FLOOD=$!
    handshakes "$LB4" > "$DIR/lb.txt" &
    LBJ=$!
    client=$(handshakes "$CLIENT4")
    wait "$LBJ" || true
    wait "$FLOOD" 2>/dev/null || true
    read -r s1 q1 t1 < <(cpu_ticks)
    opens=$(( $(passive_opens) - opens0 )); ldrops=$(( $(listen_drops) - ldrops0 )); bdrops=$(( $(backlog_drops) - bdrops0 ))
    ct_end=$(conntrack_live); flooded_ms=$(replace_ms); sleep "$CONNTRACK_AFTER"; ct_later=$(conntrack_live)
    if [ -n "${COUNTERS_DIR:-}" ]; then
      ip netns exec "$E" nft list counters > "$COUNTERS_DIR/$mode.$rep.txt" 2>/dev/null || true
      [ "$mode" = iptables ] && ip netns exec "$E" iptables-nft -L INPUT -v -n -x > "$COUNTERS_DIR/$mode.$rep.iptables" 2>/dev/null || true
      ip netns exec "$E" nstat -az 2>/dev/null | awk 'NR>1 && $2>0' > "$COUNTERS_DIR/$mode.$rep.nstat" || true
    fi
    sent=$(grep -o "[0-9]* packets tramitted\|[0-9]* packets transmitted" "$DIR/flood.txt" | head -1 | cut -d' ' -f1)
    kill -TERM "$EDGE_PID"; wait "$EDGE_PID" 2>/dev/null || true; EDGE_PID=""
    echo "| $mode | $rep | ${sent:-?} | $opens | $ldrops | $bdrops | $(( 100 * (q1 - q0) / (t1 - t0) )) | $(( 100 * (s1 - s0) / (t1 - t0) )) | $(cat "$DIR/lb.txt") | $client | $ct_end | $ct_later | $quiet_ms / $flooded_ms |"
  done
done
