#!/usr/bin/env python3
"""RSS of Portcullis idle and with N idle proxied WebSockets (loopback only).

Starts a minimal WebSocket upstream (asyncio: answers the upgrade with 101 and then just
holds the connection), starts Portcullis pinned to PROXY_CPUS with a config routing /ws/ to
it, opens N client WebSockets through the edge, waits, and reads VmRSS / RssAnon of the edge
from /proc. Everything started is stopped at the end.
"""
import asyncio, base64, hashlib, os, signal, subprocess, sys, time

N = int(os.environ.get("WS_CONNS", "10000"))
FD_LIMIT = __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[1]
EDGE_PORT, UP_PORT, ADMIN_PORT = 18207, 18300, 18128
RUN = os.environ["RUN"]
BIN = os.environ["PORTCULLIS_BIN"]
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def rss(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    kib = lambda k: int(fields.get(k, "0 kB").split()[0])
    return kib("VmRSS"), kib("RssAnon")


async def upstream(reader, writer):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        key = b""
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"sec-websocket-key:"):
                key = line.split(b":", 1)[1].strip()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        await writer.drain()
        while await reader.read(4096):
            pass
    except (Exception, asyncio.CancelledError):
        pass  # health-check probes connect and leave; shutdown cancels the rest
    writer.close()


async def client(i, sem, held):
    async with sem:
        reader, writer = await asyncio.open_connection("127.0.0.1", EDGE_PORT)
        key = base64.b64encode(os.urandom(16))
        writer.write(b"GET /ws/%d HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " % i + key + b"\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(head[:60])
        held.append(writer)


async def main():
    server = await asyncio.start_server(upstream, "127.0.0.1", UP_PORT, backlog=4096)
    os.makedirs(f"{RUN}/state", exist_ok=True)
    os.makedirs(f"{RUN}/logs", exist_ok=True)
    with open(f"{RUN}/portcullis.toml", "w") as f:
        f.write(f"""[server]
name = "localhost"
state_dir = "{RUN}/state"
log_dir = "{RUN}/logs"
idle_timeout = "600s"
[[listener]]
name = "http"
address = "127.0.0.1:{EDGE_PORT}"
[admin]
address = "127.0.0.1:{ADMIN_PORT}"
token = "bench-token"
[[service]]
name = "ws"
[[service.upstream]]
address = "127.0.0.1:{UP_PORT}"
[[route]]
path = "/ws/"
service = "ws"
""")
    cpus = os.environ.get("PROXY_CPUS", "0")
    edge = subprocess.Popen(["taskset", "-c", cpus, BIN, "serve", "--config", f"{RUN}/portcullis.toml"],
                            stdout=open(f"{RUN}/edge.log", "w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                r, w = await asyncio.open_connection("127.0.0.1", EDGE_PORT)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        held = []
        await client(0, asyncio.Semaphore(1), held)  # warm-up: one tunnel, then close it
        held.pop().close()
        await asyncio.sleep(1)
        idle = rss(edge.pid)
        sem = asyncio.Semaphore(256)
        t0 = time.monotonic()
        await asyncio.gather(*(client(i, sem, held) for i in range(N)))
        opened = time.monotonic() - t0
        await asyncio.sleep(3)
        loaded = rss(edge.pid)
        print("| state | VmRSS KiB | RssAnon KiB |")
        print("|---|---|---|")
        print(f"| idle (after one warm-up tunnel) | {idle[0]} | {idle[1]} |")
        print(f"| {len(held)} idle proxied WebSockets | {loaded[0]} | {loaded[1]} |")
        print(f"\n(descriptor hard limit on this machine: {FD_LIMIT}; each tunnel holds two in the edge)")
        print(f"per WebSocket: {(loaded[0]-idle[0])/max(len(held),1):.1f} KiB VmRSS "
              f"({(loaded[1]-idle[1])/max(len(held),1):.1f} KiB anon); {len(held)} tunnels opened in {opened:.1f} s")
        for w in held:
            w.close()
    finally:
        edge.send_signal(signal.SIGTERM)
        try:
            edge.wait(10)
        except subprocess.TimeoutExpired:
            edge.kill()
        server.close()


asyncio.run(main())
