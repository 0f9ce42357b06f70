#!/usr/bin/env python3
"""Opens N keep-alive connections to 127.0.0.1:PORT, sends one request on each, reads the
answer, then holds them all idle for HOLD seconds (bench/footprint.sh measures the
gateway meanwhile). Standard library only."""
import asyncio
import resource
import sys

PORT, N, HOLD = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
REQUEST = b"GET /public/x HTTP/1.1\r\nHost: bench\r\n\r\n"


async def one(opened):
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    writer.write(REQUEST)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head[:40])
    opened.append(writer)


async def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    opened = []
    sem = asyncio.Semaphore(500)

    async def bounded():
        async with sem:
            await one(opened)

    await asyncio.gather(*(bounded() for _ in range(N)))
    print(f"open {len(opened)}", flush=True)
    await asyncio.sleep(HOLD)
    for writer in opened:
        writer.close()


asyncio.run(main())
