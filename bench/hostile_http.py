"""Hostile clients against one web process: memory under huge frames, latency under slowloris.

    .venv/bin/python -m bench.hostile_http                    # this tree's web app
    .venv/bin/python -m bench.hostile_http --root /tmp/before # another tree's (e.g. main's)

1. *Frames*: 80 websockets each send one 15 MiB text frame at once (raw sockets, one shared
   payload, so the clients cost no memory). Measured: the web process's peak RSS (VmHWM) before
   and after, and how each connection ended (the server's close code, or an app reply).
2. *Slowloris*: 1,000 connections each send half a request head and wait; meanwhile, for 15 s
   from the first, one normal client makes a ``GET /api/health`` every 50 ms, a fresh connection
   each. Measured: their latency (p50, p95, max) and failures, then how many of the 1,000 the
   server still holds at 15 s.

One ``python -m web`` (HOST 127.0.0.1, default settings) on a redis-server of its own on a free
loopback port, started afresh for each part; prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench.harness import exit_on_sigterm, percentile, quiet_web, stopped, vm_kb
from rsmq_core.embedded import EmbeddedRedis
from support.web import ROOT, WebProcess

MIB = 1024 * 1024
HANDSHAKE = (
    "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@contextlib.contextmanager
def web_process(root: Path, redis_url: str) -> Iterator[WebProcess]:
    """``python -m web`` of ``root`` with the app's own settings, once it answers."""
    web = quiet_web(redis_url, "hostile", root)
    try:
        yield web
    finally:
        stopped(web, 15)


async def huge_frame(port: int, frame: memoryview) -> str:
    """Open a websocket, send ``frame``, say how the connection ended."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, HANDSHAKE.format(port=port).encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += await loop.sock_recv(sock, 4096)
        if b" 101 " not in answer.split(b"\r\n", 1)[0]:
            return "refused"
        try:
            await loop.sock_sendall(sock, frame)
        except OSError:
            pass  # cut while sending: what follows says why
        reply = answer.partition(b"\r\n\r\n")[2]
        async with asyncio.timeout(60):
            while len(reply) < 4:
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk:
                    break
                reply += chunk
        if reply[:1] == b"\x88" and len(reply) >= 4:
            return f"close {struct.unpack('!H', reply[2:4])[0]}"
        return "app reply" if reply else "cut"
    except (OSError, TimeoutError) as exc:
        return type(exc).__name__
    finally:
        sock.close()


async def frames(pid: int, port: int, clients: int, size: int) -> tuple[int, int, dict[str, int]]:
    """VmHWM before and after, and how many connections ended each way."""
    # One masked frame with an all-zero key, so the payload goes out as is, shared by all.
    header = b"\x81\xff" + struct.pack("!Q", size) + b"\0\0\0\0"
    frame = memoryview(header + b"x" * size)
    before = vm_kb(pid, "VmHWM") * 1024
    ends = await asyncio.gather(*(huge_frame(port, frame) for _ in range(clients)))
    counts = {end: ends.count(end) for end in sorted(set(ends))}
    return before, vm_kb(pid, "VmHWM") * 1024, counts


async def slowloris(port: int, holders: int, seconds: float) -> tuple[list[float], int, int]:
    """The normal requests' times (s, sorted), how many failed, how many holders stay open."""
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    started = time.monotonic()
    for _ in range(holders):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        opened.append((reader, writer))
    times: list[float] = []
    failures = 0
    while time.monotonic() < started + seconds:  # across the head timeout (10 s) and after
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(5):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                line = await reader.readline()
                await reader.readuntil(b"\r\n\r\n")
            writer.close()
            if b" 200 " not in line:
                failures += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            failures += 1
        times.append(time.perf_counter() - t0)
        await asyncio.sleep(0.05)
    held = 0
    for reader, writer in opened:
        try:
            async with asyncio.timeout(0.05):
                while await reader.read(65536):  # a 408, then the end
                    pass
        except TimeoutError:
            held += 1  # nothing, not even an EOF: still open
        except OSError:
            pass
        writer.close()
    return sorted(times), failures, held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the tree whose web app runs")
    parser.add_argument("--clients", type=int, default=80)
    parser.add_argument("--frame-mib", type=int, default=15)
    parser.add_argument("--holders", type=int, default=1000)
    args = parser.parse_args(argv)
    exit_on_sigterm()  # a SIGTERM unwinds, stopping the processes started here
    redis = EmbeddedRedis()
    try:
        redis.start()
        with web_process(args.root, redis.url) as web:
            size = args.frame_mib * MIB
            before, peak, ends = asyncio.run(frames(web.proc.pid, web.port, args.clients, size))
        with web_process(args.root, redis.url) as web:
            times, failures, held = asyncio.run(slowloris(web.port, args.holders, 15))
    finally:
        redis.cleanup()
    print(f"web app of {args.root}")
    print(f"{'measure':<48} {'value':>14}")
    rows: list[tuple[str, object]] = [
        (f"frames: VmHWM before {args.clients} x {args.frame_mib} MiB (MB)", before / 1e6),
        ("frames: VmHWM after (MB)", peak / 1e6),
        ("frames: how they ended", ", ".join(f"{n} {end}" for end, n in ends.items())),
        (f"slowloris: {args.holders} held; normal p50 (ms)", percentile(times, 0.5) * 1000),
        ("slowloris: normal p95 (ms)", percentile(times, 0.95) * 1000),
        ("slowloris: normal max (ms)", times[-1] * 1000),
        ("slowloris: normal requests", len(times)),
        ("slowloris: normal failures", failures),
        ("slowloris: half-sent still open at 15 s", held),
    ]
    for name, value in rows:
        text = f"{value:14.1f}" if isinstance(value, float) else f"{value!s:>14}"
        print(f"{name:<48} {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
