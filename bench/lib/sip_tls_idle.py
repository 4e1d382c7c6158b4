#!/usr/bin/env python3
"""Memory per idle partner TLS connection (mutual TLS) of a SIP edge, on loopback.

Starts the target (Portcullis with a SIP TLS listener requiring a client certificate, or Kamailio
with the SIP benchmark's edge.cfg and WITH_TLS) pinned to PROXY_CPUS, opens one warm-up
connection, measures, opens SIP_CONNS (1000) mutual-TLS connections with the partner
certificate of the SIP benchmark's test PKI (each answers a CRLFCRLF ping with a CRLF pong, so
it is served, not just accepted), waits, measures again and reports the difference per
connection: PSS summed over the target's processes (Kamailio runs several that share memory;
for the one Portcullis process PSS is its RSS) and, for Portcullis, RssAnon. Source addresses
are spread over 127.0.0.2.. (at most 200 per address: the edge holds at most 256 SIP
connections per source). Everything started is stopped at the end.
"""
import asyncio, os, signal, ssl, subprocess, sys, time

N = int(os.environ.get("SIP_CONNS", "1000"))
TARGET = sys.argv[1] if len(sys.argv) > 1 else "portcullis"
RUN, SIPB, BIN = os.environ["RUN"], os.environ["SIPB"], os.environ.get("PORTCULLIS_BIN", "")
SIP_PORT, TLS_PORT, NEXT_HOP_PORT = 25960, 25961, 25970
HTTPS_PORT, ADMIN_PORT = 25943, 25944
PER_SOURCE = 200


def tree(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def memory(pid):
    """(PSS KiB over the process tree, RssAnon KiB of the top process)."""
    pss = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                pss += sum(int(l.split()[1]) for l in f if l.startswith("Pss:"))
        except OSError:
            pass
    with open(f"/proc/{pid}/status") as f:
        anon = next((int(l.split()[1]) for l in f if l.startswith("RssAnon:")), 0)
    return pss, anon


def portcullis_cmd():
    os.makedirs(f"{RUN}/state", exist_ok=True)
    os.makedirs(f"{RUN}/logs", exist_ok=True)
    with open(f"{RUN}/portcullis.toml", "w") as f:
        f.write(f"""[server]
name = "edge.lab.test"
state_dir = "{RUN}/state"
log_dir = "{RUN}/logs"
idle_timeout = "600s"
[[listener]]
name = "https"
address = "127.0.0.1:{HTTPS_PORT}"
tls = true
[tls]
cert = "{SIPB}/tls/edge.crt"
key = "{SIPB}/tls/edge.key"
[admin]
address = "127.0.0.1:{ADMIN_PORT}"
token = "sip-idle-bench-token"
[sip]
next_hop = "sip:127.0.0.1:{NEXT_HOP_PORT};transport=tcp"
[[sip.listener]]
name = "partners-tls"
address = "127.0.0.1:{TLS_PORT}"
transport = "tls"
client_auth = "required"
ca = "{SIPB}/tls/ca.crt"
crl = "{SIPB}/tls/crl.pem"
[[federation.allow]]
domain = "partner.allowed.test"
edge = "sip.partner.allowed.test"
""")
    return [BIN, "serve", "--config", f"{RUN}/portcullis.toml"]


def kamailio_cmd():
    return ["kamailio", "-f", f"{SIPB}/kamailio/edge.cfg", "-w", f"{SIPB}/kamailio", "-DD", "-E", "-m", "1024", "-M", "16",
            "-A", "WITH_FEDGUARD", "-A", "WITH_TLS", "-A", f"TLS_PORT={TLS_PORT}", "-A", f"SIP_PORT={SIP_PORT}",
            "-A", f'NEXT_HOP="127.0.0.1:{NEXT_HOP_PORT}"', "-A", f'CTL_SOCK="unix:{RUN}/kamailio.sock"', "-A", "FG_RATE=20"]


def client_context():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the target's certificate is not what is measured
    context.load_cert_chain(f"{SIPB}/tls/partner.crt", f"{SIPB}/tls/partner.key")
    return context


async def connect(i, context, sem, held):
    async with sem:
        source = f"127.0.0.{2 + i // PER_SOURCE}"
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", TLS_PORT, ssl=context, local_addr=(source, 0)), 30)
        writer.write(b"\r\n\r\n")  # RFC 5626 keep-alive ping: the edge answers CRLF
        await writer.drain()
        pong = await asyncio.wait_for(reader.readexactly(2), 30)
        if pong != b"\r\n":
            raise RuntimeError(f"no pong: {pong!r}")
        held.append(writer)


async def main():
    os.makedirs(RUN, exist_ok=True)
    cmd = portcullis_cmd() if TARGET == "portcullis" else kamailio_cmd()
    cpus = os.environ.get("PROXY_CPUS", "0")
    proc = subprocess.Popen(["timeout", "300", "taskset", "-c", cpus] + cmd, stdout=open(f"{RUN}/{TARGET}.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    context = client_context()
    try:
        for _ in range(150):
            try:
                r, w = await asyncio.open_connection("127.0.0.1", TLS_PORT)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"{TARGET} does not listen on {TLS_PORT} (log: {RUN}/{TARGET}.log)")
        top = tree(proc.pid)[-1] if TARGET == "portcullis" else proc.pid
        held = []
        await connect(0, context, asyncio.Semaphore(1), held)  # warm-up
        held.pop().close()
        await asyncio.sleep(2)
        idle = memory(top)
        t0 = time.monotonic()
        await asyncio.gather(*(connect(i, context, asyncio.Semaphore(64), held) for i in range(N)))
        opened = time.monotonic() - t0
        await asyncio.sleep(3)
        loaded = memory(top)
        n = max(len(held), 1)
        anon = f"{(loaded[1] - idle[1]) / n:.1f}" if TARGET == "portcullis" else "– (shared memory)"
        print(f"| {TARGET} | {len(held)} | {idle[0]} | {loaded[0]} | {(loaded[0] - idle[0]) / n:.1f} | {anon} | {opened:.1f} |")
        for w in held:
            w.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


asyncio.run(main())
