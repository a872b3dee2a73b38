"""A loopback TCP proxy between workers and Redis that adds latency and drops connections.

Run as ``python -m bench.chaos.proxy --target 127.0.0.1:6380 --ports 4 --log drops.log``:
it listens on ``--ports`` free loopback ports (one per worker slot, so a dropped connection
is known to belong to that slot's worker), prints them as one JSON line on stdout, and
forwards every connection to ``--target``:

- each chunk, in each direction, is held for ``--latency-ms`` plus a random share of
  ``--jitter-ms`` (order kept: a chunk never overtakes the one before it);
- every connection is aborted at random, ``--drop-rate`` times per second on average;
- SIGUSR1 aborts every open connection at once (a "cut");
- when the target refuses (Redis is down), the client's connection is closed at once.

Each drop and cut is appended to ``--log`` as ``<epoch seconds> <drop|cut> <slot>``, written
before the connection is aborted, so the soak can tell which faults a message lived through.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 65536
TICK = 0.05  # seconds between the random-drop draws


@dataclass(eq=False)  # identity: links live in a set
class Link:
    """One proxied connection: the client's side and Redis's side."""

    slot: int
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class Proxy:
    def __init__(
        self,
        target: tuple[str, int],
        *,
        latency: float,
        jitter: float,
        drop_rate: float,
        log_fd: int,
        rng: random.Random,
    ) -> None:
        self.target = target
        self.latency = latency
        self.jitter = jitter
        self.drop_rate = drop_rate
        self.log_fd = log_fd
        self.rng = rng
        self.links: set[Link] = set()

    def note(self, what: str, slot: int) -> None:
        os.write(self.log_fd, f"{time.time():.6f} {what} {slot}\n".encode())

    async def serve(self, slot: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()  # Redis is down: the client sees its connection fail
            return
        link = Link(slot, writer, up_writer)
        self.links.add(link)
        link.tasks = [
            asyncio.create_task(self.pump(reader, up_writer)),
            asyncio.create_task(self.pump(up_reader, writer)),
        ]
        try:
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.links.discard(link)
            link.abort()

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction, each chunk delayed, in order (a queue and a paced writer)."""
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def paced_writer() -> None:
            while True:
                due, data = await held.get()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if not data:
                    writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        sending = asyncio.create_task(paced_writer())
        last_due = 0.0
        try:
            while not sending.done():
                data = await reader.read(CHUNK)
                delay = self.latency + self.rng.random() * self.jitter
                last_due = max(last_due, loop.time() + delay)
                held.put_nowait((last_due, data))
                if not data:
                    break
            await sending
        except OSError:
            pass  # either side went away: serve() aborts the link
        finally:
            sending.cancel()
            if sending.done() and not sending.cancelled():
                sending.exception()  # retrieved: a reset while writing is expected here

    async def chaos(self) -> None:
        """Abort connections at random: each one drop_rate times a second on average."""
        chance = self.drop_rate * TICK
        while True:
            await asyncio.sleep(TICK)
            for link in list(self.links):
                if self.rng.random() < chance:
                    self.note("drop", link.slot)
                    self.links.discard(link)
                    link.abort()

    def cut(self) -> None:
        for link in list(self.links):
            self.note("cut", link.slot)
            self.links.discard(link)
            link.abort()


def parse_target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: give a loopback 127.0.0.1:PORT")
    return host, int(port)


async def main_async(args: argparse.Namespace) -> None:
    log_fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    proxy = Proxy(
        args.target,
        latency=args.latency_ms / 1000,
        jitter=args.jitter_ms / 1000,
        drop_rate=args.drop_rate,
        log_fd=log_fd,
        rng=random.Random(args.seed),
    )
    servers = []
    for slot in range(args.ports):

        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter, slot: int = slot):
            # Cancelled when the proxy stops: the end of that connection, not an error.
            with contextlib.suppress(asyncio.CancelledError):
                await proxy.serve(slot, r, w)

        servers.append(await asyncio.start_server(serve, "127.0.0.1", 0))
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, proxy.cut)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(json.dumps({"ports": ports}), flush=True)
    chaos = asyncio.create_task(proxy.chaos())
    await stop.wait()
    chaos.cancel()
    proxy.cut()
    for s in servers:
        s.close()
    os.close(log_fd)


def start(
    target_port: int,
    log: Path,
    *,
    ports: int = 1,
    latency_ms: float = 0.0,
    jitter_ms: float = 0.0,
    drop_rate: float = 0.0,
    seed: int | None = None,
) -> tuple[subprocess.Popen[bytes], list[int]]:
    """Start the proxy as a child process; returns it and its listening ports (by slot).

    SIGUSR1 to it cuts every connection; :func:`stop` ends it.
    """
    args = [
        sys.executable,
        "-m",
        "bench.chaos.proxy",
        "--target",
        f"127.0.0.1:{target_port}",
        "--ports",
        str(ports),
        "--latency-ms",
        str(latency_ms),
        "--jitter-ms",
        str(jitter_ms),
        "--drop-rate",
        str(drop_rate),
        "--log",
        str(log),
        *(["--seed", str(seed)] if seed is not None else []),
    ]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(args, cwd=root, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed once it listens
    if not line:
        stop(proc)
        raise RuntimeError(f"the proxy did not start (exit status {proc.returncode})")
    return proc, [int(x) for x in json.loads(line)["ports"]]


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos.proxy", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--target", type=parse_target, required=True, help="127.0.0.1:PORT")
    parser.add_argument("--ports", type=int, default=1, help="listening ports (worker slots)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--drop-rate", type=float, default=0.0, help="drops per connection per s")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--log", required=True, help="file the drops and cuts are appended to")
    args = parser.parse_args(argv)
    if args.ports < 1 or min(args.latency_ms, args.jitter_ms, args.drop_rate) < 0:
        parser.error("--ports must be at least 1; latency, jitter and drop rate not negative")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
