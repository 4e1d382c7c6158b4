"""Packet probes for tests/it/firewall.rs, run with Debian's python3-scapy inside the client
namespace. Each case prints one line: how many answers came back (SYN-ACKs, echo replies).

  probe.py flags SRC DST PORT FLAGS [MSS]   one TCP packet with FLAGS ("S", "SF", "", ...)
  probe.py synburst SRC DST PORT N [FLAGS]  N SYNs (MSS 1460) from N source ports (FLAGS: "S")
  probe.py synpaced SRC DST PORT N MS       the same, one every MS milliseconds
  probe.py ping SRC DST                     one ICMP(v6) echo request
  probe.py fragments SRC DST PORT           a SYN split into fragments (IPv4 or IPv6)
  probe.py too-big SRC DST                  an ICMPv6 packet-too-big (path MTU discovery)
"""
import random
import sys

from scapy.all import ICMP, IP, TCP, IPv6, ICMPv6EchoRequest, ICMPv6PacketTooBig, IPv6ExtHdrFragment, conf, fragment, fragment6, send, sr

conf.verb = 0


def layer3(src, dst):
    return IPv6(src=src, dst=dst) if ":" in dst else IP(src=src, dst=dst)


def synacks(answers):
    return sum(1 for _, r in answers if r.haslayer(TCP) and (int(r[TCP].flags) & 0x12) == 0x12)


def main(argv):
    case, src, dst = argv[1], argv[2], argv[3]
    if case == "flags":
        port, flags = int(argv[4]), argv[5]
        options = [("MSS", int(argv[6]))] if len(argv) > 6 else []
        # A port of its own: the edge retransmits SYN-ACKs to an earlier probe's port.
        sport = random.randint(20000, 39999)
        answers, _ = sr(layer3(src, dst) / TCP(sport=sport, dport=port, flags=flags, options=options), timeout=1)
        print(len(answers))
    elif case == "synburst":
        port, n = int(argv[4]), int(argv[5])
        flags = argv[6] if len(argv) > 6 else "S"
        packets = [layer3(src, dst) / TCP(sport=41000 + i, dport=port, flags=flags, options=[("MSS", 1460)]) for i in range(n)]
        answers, _ = sr(packets, timeout=2)
        print(synacks(answers))
    elif case == "synpaced":
        port, n, gap = int(argv[4]), int(argv[5]), int(argv[6]) / 1000
        packets = [layer3(src, dst) / TCP(sport=43000 + i, dport=port, flags="S", options=[("MSS", 1460)]) for i in range(n)]
        answers, _ = sr(packets, inter=gap, timeout=2)
        print(synacks(answers))
    elif case == "ping":
        echo = ICMPv6EchoRequest() if ":" in dst else ICMP()
        answers, _ = sr(layer3(src, dst) / echo, timeout=1)
        print(len(answers))
    elif case == "fragments":
        port = int(argv[4])
        syn = TCP(sport=42000, dport=port, flags="S", options=[("MSS", 1460)]) / (b"x" * 64)
        if ":" in dst:
            send(fragment6(IPv6(src=src, dst=dst) / IPv6ExtHdrFragment() / syn, 80))
        else:
            send(fragment(IP(src=src, dst=dst) / syn, fragsize=16))
        print(0)
    elif case == "too-big":
        inner = IPv6(src=dst, dst=src) / TCP(sport=8080, dport=40000, flags="A")
        send(IPv6(src=src, dst=dst) / ICMPv6PacketTooBig(mtu=1280) / inner)
        print(0)
    else:
        raise SystemExit(f"unknown case {case}")


if __name__ == "__main__":
    main(sys.argv)
