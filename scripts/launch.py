"""The run command's body: Redis (embedded unless REDIS_URL is set), the web app and a worker.

It starts the Procfile's two processes — the web app (on $PORT or 8000) and a worker —
prints the URL to open, sends a few demo "applications" and prints each status event as it
happens in the terminal too, then keeps everything running until Ctrl-C. ``--once`` exits when
the demo applications are done (the test suite runs it so).

``--compare`` shows realtime vs polling instead: the web app, one realtime and one polling
worker (each on its own queue, the same handler), and a steady trickle of sends to both; the
dashboard's "Realtime vs polling" section shows their pickup latencies and Redis commands per
second. With ``--once`` it exits when COMPARE_ONCE messages of each queue are done.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import redis
import redis.asyncio as aioredis

from realtime import Subscriber
from realtime.events import events_channel, parse_published
from rsmq_core import AsyncRSMQ, Keys, QueueExists
from rsmq_core.connection import (
    ConnectionOptions,
    check_url,
    explain,
    is_misconfigured,
    mask_url,
    scrub,
    sync_client,
)
from rsmq_core.embedded import EmbeddedRedis, NoServerBinary, redis_server_binary
from worker.settings import EXAMPLE_HANDLER

ROOT = Path(__file__).resolve().parent.parent
NS, QUEUE = "rsmq", "jobs"
DEMO = [{"applicant": "Ada"}, {"applicant": "Grace"}, {"applicant": "Mallory", "fail": True}]
COMPARE_QUEUES = {"realtime": "compare-realtime", "polling": "compare-polling"}
COMPARE_EVERY = 0.5  # seconds between sends to each queue
COMPARE_ONCE = 10  # messages to each queue with --once


async def demo(url: str, *, once: bool) -> None:
    client = aioredis.Redis.from_url(url)
    rsmq = AsyncRSMQ(client, ns=NS, realtime=True)
    async with Subscriber(client) as sub:
        events = sub.listen(events_channel(Keys.of(NS, QUEUE)))
        try:
            await rsmq.create_queue(QUEUE, vt=30)
        except QueueExists:
            pass
        ids = {await rsmq.send_message(QUEUE, json.dumps(body)): body for body in DEMO}
        for mid, body in ids.items():
            print(f"sent {mid}: {json.dumps(body)}")
        finished: set[str] = set()
        while not once or len(finished) < len(ids):
            item = await events.get()
            if item is None:
                continue
            _, event = parse_published(item[1])
            extra = f" progress={event.progress:.0%}" if event.progress is not None else ""
            extra += f" error={event.error!r}" if event.error else ""
            extra += f" result={json.dumps(event.result)}" if event.result is not None else ""
            print(f"  {event.id} rc={event.rc} {event.status}{extra}")
            if event.status in ("done", "dead") and event.id in ids:
                finished.add(event.id)
    await client.aclose()


async def trickle(url: str, *, once: bool) -> None:
    """One message to each compare queue every COMPARE_EVERY seconds; with ``once``,
    COMPARE_ONCE each, then wait until every one is done."""
    client = aioredis.Redis.from_url(url)
    rsmq = AsyncRSMQ(client, ns=NS, realtime=True)
    async with Subscriber(client) as sub:
        events = sub.listen(*(events_channel(Keys.of(NS, q)) for q in COMPARE_QUEUES.values()))
        for qname in COMPARE_QUEUES.values():
            with contextlib.suppress(QueueExists):
                await rsmq.create_queue(qname, vt=30)
        sent: set[str] = set()
        done: set[str] = set()

        async def count_done() -> None:
            while True:
                item = await events.get()
                if item is not None:
                    _, event = parse_published(item[1])
                    if event.status == "done":
                        done.add(event.id)

        counting = asyncio.create_task(count_done())
        n = 0
        try:
            while not once or n < COMPARE_ONCE:
                n += 1
                for qname in COMPARE_QUEUES.values():
                    sent.add(await rsmq.send_message(qname, json.dumps({"n": n})))
                if n % 10 == 0:
                    print(f"sent {n} messages to each of {', '.join(COMPARE_QUEUES.values())}")
                await asyncio.sleep(COMPARE_EVERY)
            async with asyncio.timeout(60):
                while not sent <= done:
                    await asyncio.sleep(0.1)
        finally:
            counting.cancel()
    await client.aclose()


async def wait_for_web(port: int) -> None:
    """Until the web app answers its health check (it runs a script against Redis)."""
    async with asyncio.timeout(30):
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /api/health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                status = await reader.readline()
                writer.close()
                if b" 200 " in status:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)


# A Redis being started may refuse connections for a moment; the whole check stays well
# within 10 s even when every try waits out its connect timeout.
REDIS_PATIENCE, CONNECT_TIMEOUT = 5.0, 2.0
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)


class CannotStart(Exception):
    """What stops the run before anything started, said in one sentence; ``status`` is the
    exit status (2 for a bad setting, as the web app and the worker exit)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def preflight(url: str | None) -> int:
    """The port to serve on, once PORT and REDIS_URL are well-formed, the port is free and
    Redis at the URL (when one is given) answers."""
    port_text = os.environ.get("PORT", "8000")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise CannotStart(f"bad setting: PORT={port_text!r} must be a port number, 1 to 65535", 2)
    if url:
        try:
            check_url(url)
            options = ConnectionOptions.from_env(os.environ)
        except ValueError as exc:
            raise CannotStart(f"bad setting: {exc}", 2) from None
    check_port(int(port_text))
    if url:
        check_redis(url, options)
    return int(port_text)


def check_port(port: int) -> None:
    """That nothing listens on the port: else the web app would fail to start, and another
    instance there would answer the health check as if it were ours."""
    with socket.socket() as probe:
        # As uvicorn binds: a port whose old connections wait in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise CannotStart(
                f"PORT {port} is in use (is the app already running?): stop what listens "
                "there, or set PORT to a free port"
            ) from None


def check_redis(url: str, options: ConnectionOptions) -> None:
    """That Redis at the URL answers PING, within REDIS_PATIENCE plus one connect timeout."""
    deadline = time.monotonic() + REDIS_PATIENCE
    while True:
        try:
            with sync_client(
                url, options, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=CONNECT_TIMEOUT
            ) as client:
                client.ping()
            return
        except redis.RedisError as exc:
            if is_misconfigured(exc) or not isinstance(exc, UNREACHABLE):
                raise CannotStart(
                    f"Redis at {mask_url(url)} cannot be used: {scrub(explain(exc), url)}"
                ) from None
            if time.monotonic() > deadline:
                raise CannotStart(
                    f"Redis at {mask_url(url)} is unreachable ({scrub(explain(exc), url)}): "
                    "start it, or unset REDIS_URL to run an embedded one"
                ) from None
        time.sleep(0.2)


async def run(url: str, port: int, *, once: bool, compare: bool = False) -> int:
    env = dict(
        os.environ,
        REDIS_URL=url,
        RSMQ_NS=NS,
        QUEUES=QUEUE,
        QUEUE=QUEUE,
        MAX_RECEIVES="2",
        RETRY_BACKOFF="0.5",
        PYTHONPATH=str(ROOT),
    )
    env |= {"HANDLER": EXAMPLE_HANDLER}  # the demo's work; a worker has no default handler
    # The web app on loopback only, and quiet: its request lines would bury the demo's.
    web_env = dict(env, HOST="127.0.0.1", PORT=str(port), LOG_LEVEL="WARNING")
    workers = [env]
    if compare:
        # Quiet too: a line per message from each worker would bury the instructions.
        workers = [
            dict(env, QUEUES=qname, REALTIME=str(mode == "realtime").lower(), LOG_LEVEL="WARNING")
            for mode, qname in COMPARE_QUEUES.items()
        ]
    children = [
        await asyncio.create_subprocess_exec(sys.executable, "-m", "worker", env=e, cwd=ROOT)
        for e in workers
    ]
    children.append(
        await asyncio.create_subprocess_exec(sys.executable, "-m", "web", env=web_env, cwd=ROOT)
    )
    exits = [asyncio.create_task(child.wait()) for child in children]
    try:
        ready = asyncio.create_task(wait_for_web(port))
        await asyncio.wait({ready, *exits}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            print("the web app or the worker exited at start; stopping", file=sys.stderr)
            return 1
        ready.result()
        if any(e.done() for e in exits):  # it answered, but it is gone: it was not ours
            print("the web app or the worker exited at start; stopping", file=sys.stderr)
            return 1
        if compare:
            print(
                f"\nOpen http://127.0.0.1:{port}/dashboard — realtime vs polling, one worker "
                "each, a message to each every 0.5 s (Ctrl-C stops everything)\n"
            )
            showing = asyncio.create_task(trickle(url, once=once))
        else:
            print(f"\nOpen http://127.0.0.1:{port}/ — the example app (Ctrl-C stops everything)\n")
            showing = asyncio.create_task(demo(url, once=once))
        await asyncio.wait({showing, *exits}, return_when=asyncio.FIRST_COMPLETED)
        if not showing.done():
            showing.cancel()
            print("the web app or the worker exited; stopping", file=sys.stderr)
            return 1
        showing.result()
        return 0
    finally:
        for child in children:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
                await child.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="exit when the demo is done")
    parser.add_argument(
        "--compare", action="store_true", help="realtime vs polling: a worker of each, sends"
    )
    args = parser.parse_args()
    # Explicitly: a shell that starts us in the background would have SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    server = None
    url = os.environ.get("REDIS_URL")
    try:
        port = preflight(url)
        shown = '"$REDIS_URL"' if url else None  # its password stays off the screen
        if not url:
            try:
                binary = redis_server_binary()
            except NoServerBinary as exc:
                raise CannotStart(f"{exc}; or set REDIS_URL to a Redis you run") from None
            server = EmbeddedRedis(own_session=True, binary=binary)  # Ctrl-C: web, worker first
            server.start()
            url = shown = server.url
            print(f"started an embedded Redis at {url} ({binary}; set REDIS_URL to use your own)")
        if not args.once:
            print(f"Try the CLI meanwhile: .venv/bin/rsmq --url {shown} send jobs hello")
        return asyncio.run(run(url, port, once=args.once, compare=args.compare))
    except CannotStart as exc:
        print(exc, file=sys.stderr)
        return exc.status
    except (KeyboardInterrupt, SystemExit):
        return 0
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
