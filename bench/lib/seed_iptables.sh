#!/usr/bin/env bash
# The reverse proxy installer's iptables hardening as seed 004 lists it, written for
# iptables-nft (the comparison in bench/firewall_flood.sh): basic hardening on the external
# interface (invalid packets, new without SYN, uncommon MSS, bad TCP flags, spoofed private
# sources, fragments, RST limit, ICMP and UDP rejected, everything else closed) and the
# per-port rate limit (hashlimit per source and port, load balancer exempt). The widely used
# mangle-table form; its fragment rule sits after conntrack's reassembly, as such rules do.
#   seed_iptables.sh INTERFACE PORT LOAD_BALANCER
set -euo pipefail
IF=$1; PORT=$2; LB=$3
m() { iptables-nft -t mangle -A PREROUTING -i "$IF" "$@" -j DROP; }
m -m conntrack --ctstate INVALID
m -p tcp ! --syn -m conntrack --ctstate NEW
m -p tcp -m conntrack --ctstate NEW -m tcpmss ! --mss 536:65535
for flags in "FIN,SYN FIN,SYN" "SYN,RST SYN,RST" "FIN,RST FIN,RST" "FIN,ACK FIN" "ACK,URG URG" "ACK,FIN FIN" "ACK,PSH PSH" "ALL ALL" "ALL NONE" "ALL FIN,PSH,URG" "ALL SYN,FIN,PSH,URG" "ALL SYN,RST,ACK,FIN,URG"; do
  # shellcheck disable=SC2086
  m -p tcp --tcp-flags $flags
done
for net in 224.0.0.0/3 169.254.0.0/16 172.16.0.0/12 192.0.2.0/24 192.168.0.0/16 10.0.0.0/8 0.0.0.0/8 240.0.0.0/5 127.0.0.0/8; do
  m -s "$net"
done
m -f
i() { iptables-nft -A INPUT -i "$IF" "$@"; }
i -p tcp --tcp-flags RST RST -m limit --limit 2/s --limit-burst 2 -j ACCEPT
i -p tcp --tcp-flags RST RST -j DROP
i -p icmp -j DROP
i -p udp -j DROP
i -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
i -p tcp --dport "$PORT" -s "$LB" -j ACCEPT
i -p tcp --dport "$PORT" -m conntrack --ctstate NEW -m hashlimit --hashlimit-above 50/sec --hashlimit-burst 100 \
  --hashlimit-mode srcip,dstport --hashlimit-name "port$PORT" -j DROP
i -p tcp --dport "$PORT" -j ACCEPT
i -j DROP
