"""The run command's body: Redis (embedded unless REDIS_URL is set), the web app and a worker.

It starts the Procfile's two processes — the web app (on $PORT or 8000) and a worker —
prints the URL to open, sends a few demo "applications" and prints each status event as it
happens in the terminal too, then keeps everything running until Ctrl-C. ``--once`` exits when
the demo applications are done (the test suite runs it so).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import redis.asyncio as aioredis

from realtime import Subscriber
from realtime.events import events_channel, parse_published
from rsmq_core import AsyncRSMQ, Keys, QueueExists
from rsmq_core.embedded import EmbeddedRedis
from worker.settings import EXAMPLE_HANDLER

ROOT = Path(__file__).resolve().parent.parent
NS, QUEUE = "rsmq", "jobs"
DEMO = [{"applicant": "Ada"}, {"applicant": "Grace"}, {"applicant": "Mallory", "fail": True}]


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
            print(f"  {event.id} rc={event.rc} {event.status}{extra}")
            if event.status in ("done", "dead") and event.id in ids:
                finished.add(event.id)
    await client.aclose()


async def wait_for_web(port: int) -> None:
    """Until the web app answers its health check (it runs a script against Redis)."""
    async with asyncio.timeout(30):
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /api/health HTTP/1.0\r\n\r\n")
                status = await reader.readline()
                writer.close()
                if b" 200 " in status:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)


async def run(url: str, *, once: bool) -> int:
    port = int(os.environ.get("PORT", "8000"))
    env = dict(os.environ, REDIS_URL=url, RSMQ_NS=NS, QUEUES=QUEUE, QUEUE=QUEUE,
               MAX_RECEIVES="2", RETRY_BACKOFF="0.5", PYTHONPATH=str(ROOT))  # fmt: skip
    env |= {"HANDLER": EXAMPLE_HANDLER}  # the demo's work; a worker has no default handler
    # The web app on loopback only, and quiet: its request lines would bury the demo's.
    web_env = dict(env, HOST="127.0.0.1", PORT=str(port), LOG_LEVEL="WARNING")
    children = [
        await asyncio.create_subprocess_exec(sys.executable, "-m", "worker", env=env, cwd=ROOT),
        await asyncio.create_subprocess_exec(sys.executable, "-m", "web", env=web_env, cwd=ROOT),
    ]
    exits = [asyncio.create_task(child.wait()) for child in children]
    try:
        ready = asyncio.create_task(wait_for_web(port))
        await asyncio.wait({ready, *exits}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            print("the web app or the worker exited at start; stopping", file=sys.stderr)
            return 1
        ready.result()
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
    args = parser.parse_args()
    # Explicitly: a shell that starts us in the background would have SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    server = None
    url = os.environ.get("REDIS_URL")
    try:
        if not url:
            server = EmbeddedRedis(own_session=True)  # Ctrl-C stops web and worker first
            server.start()
            url = server.url
            print(f"started an embedded Redis at {url} (set REDIS_URL to use your own)")
        if not args.once:
            print(f"Try the CLI meanwhile: .venv/bin/rsmq --url {url} send jobs hello")
        return asyncio.run(run(url, once=args.once))
    except (KeyboardInterrupt, SystemExit):
        return 0
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
