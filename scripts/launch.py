"""The run command's body: Redis (embedded unless REDIS_URL is set), the web app and a worker.

It starts the Procfile's two processes — the web app (uvicorn, on $PORT or 8000) and a worker —
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
from rsmq_core import AsyncRSMQ, QueueExists
from rsmq_core.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
NS, QUEUE = "rsmq", "jobs"
DEMO = [{"applicant": "Ada"}, {"applicant": "Grace"}, {"applicant": "Mallory", "fail": True}]


async def demo(url: str, *, once: bool) -> None:
    client = aioredis.Redis.from_url(url)
    rsmq = AsyncRSMQ(client, ns=NS, realtime=True)
    async with Subscriber(client) as sub:
        events = sub.listen(events_channel(NS, QUEUE))
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


async def run(url: str, *, once: bool) -> int:
    env = dict(os.environ, REDIS_URL=url, RSMQ_NS=NS, QUEUES=QUEUE, MAX_RECEIVES="2",
               RETRY_BACKOFF="0.5", PYTHONPATH=str(ROOT))  # fmt: skip
    worker = await asyncio.create_subprocess_exec(sys.executable, "-m", "worker", env=env, cwd=ROOT)
    showing = asyncio.create_task(demo(url, once=once))
    exited = asyncio.create_task(worker.wait())
    try:
        await asyncio.wait({showing, exited}, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            print(f"the worker exited ({worker.returncode}); stopping", file=sys.stderr)
            return 1
        showing.result()
        return 0
    finally:
        showing.cancel()
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
            await worker.wait()


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
            server = EmbeddedRedis()
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
