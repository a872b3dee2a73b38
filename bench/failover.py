"""Failover soak: time to recover and acknowledged sends lost when Redis Sentinel promotes a
replica, without and with ``min_replicas=1``.

Run from the repository root (needs redis-server on PATH)::

    .venv/bin/python -m bench.failover                  # 10 failovers per mode, ~3 minutes
    .venv/bin/python -m bench.failover --failovers 3    # a shorter run

Each mode gets a fresh group (``tests/redis_sentinel.py``: a master, two replicas, three
sentinels judging a master down after 500 ms, on free loopback ports, no persistence) and one
``AsyncRSMQ`` on its ``redis+sentinel://`` URL, on which ``--senders`` coroutines send without
pause. A send counts as acknowledged when it returns an id; a ``NotReplicated`` (too few
replicas confirmed in time) and any other error do not count (the sender goes on). Then, per
failover: after ``--traffic`` seconds of sends the master is killed with SIGKILL; "recover" is
the time from the kill to the first acknowledged send after it; the killed server is started
again as a replica of the new master (once every sentinel names it), and the round waits
until every sentinel sees the group whole. Then the senders pause: "lost" counts the ids
acknowledged in the round that the new master does not hold, and the queue is purged, so that
a long run's data (and the full sync of each rejoining server) stays small.

Two replicas, so a replica is left to confirm sends while the killed one rejoins; the
figure with ``min_replicas=1`` includes the moment Sentinel takes to point that replica at the
new master (until then WAIT cannot be satisfied: the sends are "unconfirmed").
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field

from rsmq_core import AsyncRSMQ, NotReplicated
from tests.redis_sentinel import SentinelGroup

NS = "bench"
QUEUE = "soak"


@dataclass
class Tally:
    acked: set[str] = field(default_factory=set)
    sent: int = 0
    lost: int = 0
    kill_at: float = 0.0
    first_ack: float | None = None  # the first acknowledged send after the last kill
    unconfirmed: int = 0
    failed: int = 0
    running: asyncio.Event = field(default_factory=asyncio.Event)
    busy: int = 0  # senders inside a send


async def sender(q: AsyncRSMQ, tally: Tally, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        await tally.running.wait()
        n += 1
        tally.busy += 1
        try:
            tally.acked.add(await q.send_message(QUEUE, str(n)))
            if tally.first_ack is None and tally.kill_at:
                tally.first_ack = time.monotonic()
        except NotReplicated:
            tally.unconfirmed += 1
        except Exception:
            tally.failed += 1
            await asyncio.sleep(0.01)  # the master is being replaced: do not spin
        finally:
            tally.busy -= 1


async def settle(q: AsyncRSMQ, tally: Tally) -> None:
    """Pause the senders, count the round's acknowledged ids the master lacks, purge."""
    tally.running.clear()
    while tally.busy:
        await asyncio.sleep(0.005)
    held = {i.decode() for i in await q.redis.zrange(q.keys(QUEUE).zset, 0, -1)}
    tally.lost += len(tally.acked - held)
    tally.sent += len(tally.acked)
    tally.acked.clear()
    await q.purge_queue(QUEUE)
    tally.running.set()


async def soak(
    min_replicas: int, failovers: int, senders: int, traffic: float, down_after: int
) -> list[str]:
    group = SentinelGroup(replicas=1, down_after_ms=down_after)
    try:
        group.start()
        tally, stop = Tally(), asyncio.Event()
        recoveries = []
        async with AsyncRSMQ.from_url(
            group.url, ns=NS, min_replicas=min_replicas, socket_timeout=5
        ) as q:
            await q.create_queue(QUEUE)
            tally.running.set()
            tasks = [asyncio.create_task(sender(q, tally, stop)) for _ in range(senders)]
            for n in range(1, failovers + 1):
                await asyncio.sleep(traffic)
                tally.first_ack = None
                killed = await asyncio.to_thread(group.kill_master)
                t0 = tally.kill_at = time.monotonic()
                await asyncio.to_thread(group.wait_failover, killed)
                await asyncio.to_thread(group.rejoin, killed)
                while tally.first_ack is None:
                    if time.monotonic() - t0 > 60:
                        raise RuntimeError("no acknowledged send within 60 s of the kill")
                    await asyncio.sleep(0.005)
                recoveries.append(tally.first_ack - t0)
                await settle(q, tally)
                took, lost = recoveries[-1], tally.lost
                print(f"min_replicas={min_replicas} failover {n}: recovered in {took:.2f}s, "
                      f"{lost} lost so far", file=sys.stderr)  # fmt: skip
            stop.set()
            tally.running.set()
            await asyncio.gather(*tasks)
        return [
            str(min_replicas), str(failovers), str(tally.sent), str(tally.lost),
            str(tally.unconfirmed), str(tally.failed), str(group.failovers()),
            f"{statistics.median(recoveries):.2f}", f"{max(recoveries):.2f}",
        ]  # fmt: skip
    finally:
        group.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failovers", type=int, default=10)
    parser.add_argument("--senders", type=int, default=20, help="concurrent sending coroutines")
    parser.add_argument("--traffic", type=float, default=2.0, help="seconds of sends per round")
    parser.add_argument("--down-after", type=int, default=1000, help="sentinel down-after, ms")
    args = parser.parse_args()
    # SIGTERM ends the run as Ctrl-C does, through the cleanup that stops every server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    header = [
        "min_replicas", "failovers", "acked sends", "acked lost", "unconfirmed", "failed",
        "by sentinel",
        "recover median s", "recover max s",
    ]  # fmt: skip
    rows = [
        asyncio.run(soak(mode, args.failovers, args.senders, args.traffic, args.down_after))
        for mode in (0, 1)
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for line in (header, ["-" * w for w in widths], *rows):
        print(" | ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)))


if __name__ == "__main__":
    main()
