"""Packet probes for tests/it/firewall.rs, run with Debian's python3-scapy inside the client
namespace. Each case prints one line: how many answers came back (SYN-ACKs, echo replies).

  probe.py flags SRC DST PORT FLAGS [MSS]   one TCP packet with FLAGS ("S", "SF", "", ...)
  probe.py synburst SRC DST PORT N          N SYNs (MSS 1460) from N source ports
  probe.py ping SRC DST                     one ICMP(v6) echo request
  probe.py fragments SRC DST PORT           a SYN split into IPv4 fragments
"""
import sys

from scapy.all import ICMP, IP, TCP, IPv6, ICMPv6EchoRequest, conf, fragment, send, sr

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
        answers, _ = sr(layer3(src, dst) / TCP(sport=40000, dport=port, flags=flags, options=options), timeout=1)
        print(len(answers))
    elif case == "synburst":
        port, n = int(argv[4]), int(argv[5])
        packets = [layer3(src, dst) / TCP(sport=41000 + i, dport=port, flags="S", options=[("MSS", 1460)]) for i in range(n)]
        answers, _ = sr(packets, timeout=2)
        print(synacks(answers))
    elif case == "ping":
        echo = ICMPv6EchoRequest() if ":" in dst else ICMP()
        answers, _ = sr(layer3(src, dst) / echo, timeout=1)
        print(len(answers))
    elif case == "fragments":
        port = int(argv[4])
        packet = IP(src=src, dst=dst) / TCP(sport=42000, dport=port, flags="S", options=[("MSS", 1460)]) / (b"x" * 64)
        send(fragment(packet, fragsize=16))
        answers, _ = sr(IP(src=src, dst=dst, flags="MF", frag=0) / TCP(sport=42001, dport=port, flags="S"), timeout=1)
        print(len(answers))
    else:
        raise SystemExit(f"unknown case {case}")


if __name__ == "__main__":
    main(sys.argv)
