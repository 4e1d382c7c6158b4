#!/usr/bin/env python3
"""Holds N idle keep-alive HTTP/1.1 connections to HOST:PORT (each sends one request and reads
its answer first), from source addresses 127.0.0.2-127.0.0.251 so no per-source cap applies.
Prints "ready" once all are open; exits after SECONDS or when killed. Loopback only."""
import asyncio
import sys


async def one(host, port, i, held):
    source = f"127.0.0.{2 + i % 250}"
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    held.append((reader, writer))


async def main():
    host, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    assert host.startswith("127."), "loopback only"
    held = []
    gate = asyncio.Semaphore(200)

    async def gated(i):
        async with gate:
            await one(host, port, i, held)

    await asyncio.gather(*(gated(i) for i in range(count)))
    print("ready", len(held), flush=True)
    await asyncio.sleep(seconds)


asyncio.run(main())
