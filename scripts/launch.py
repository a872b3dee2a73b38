"""The run command's body: Redis (embedded unless REDIS_URL is set) and the queue at work.

For now the "app" is a demo of the queue and its CLI; the web app and worker join it as
they land.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from rsmq_core import RSMQ, QueueExists
from rsmq_core.embedded import EmbeddedRedis


def demo(url: str) -> None:
    with RSMQ.from_url(url, realtime=True) as q:
        try:
            q.create_queue("demo", vt=30)
        except QueueExists:
            pass
        ids = q.send_messages("demo", ["hello", "from", "rsmq-realtime"])
        print(f"sent {len(ids)} messages to 'demo': {ids}")
        while (msg := q.receive_message("demo")) is not None:
            print(f"received {msg.id} rc={msg.rc}: {msg.message!r}")
            q.delete_message("demo", msg.id)
        print(q.get_queue_attributes("demo"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="run the demo and exit")
    args = parser.parse_args()

    server = None
    url = os.environ.get("REDIS_URL")
    if not url:
        server = EmbeddedRedis()
        server.start()
        url = server.url
        print(f"started an embedded Redis at {url} (set REDIS_URL to use your own)")
    try:
        demo(url)
        if args.once:
            return 0
        print(f"\nTry the CLI against it:\n  .venv/bin/rsmq --url {url} list")
        print(f"  .venv/bin/rsmq --url {url} send demo 'a message'")
        print(f"  .venv/bin/rsmq --url {url} receive demo\nCtrl-C stops.")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
