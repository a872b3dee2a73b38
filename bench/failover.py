"""Failover soak: time to recover and acknowledged sends lost when Redis Sentinel promotes a
replica, without and with ``min_replicas=1``.

Run from the repository root (needs redis-server on PATH)::

    .venv/bin/python -m bench.failover                  # 10 failovers per mode, ~3 minutes
    .venv/bin/python -m bench.failover --failovers 3    # a shorter run

Each mode gets a fresh group (``support/redis_sentinel.py``: a master, one replica, three
sentinels judging a master down after ``--down-after`` ms, on free loopback ports, no
persistence) and one ``AsyncRSMQ`` on its ``redis+sentinel://`` URL, on which ``--senders``
coroutines send without pause. A send counts as acknowledged when it returns an id; a
``NotReplicated`` ("unconfirmed") and any other error ("failed") do not count, and the sender
goes on. Per failover: after ``--traffic`` seconds the master is killed with SIGKILL; once every
sentinel names the promoted replica, the killed server is started again as its replica;
"recover" is the time from the kill to the first acknowledged send after it (with
``min_replicas=1`` that needs the rejoined replica). Then the senders pause: "acked lost"
counts the round's acknowledged ids the new master does not hold, and the queue is purged, so
the data (and each rejoining server's full sync) stays small. "by sentinel" is how many
failovers the sentinels made in all: more than were asked means a master too starved to
answer within down-after was failed over while alive.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass, field

from bench.harness import exit_on_sigterm
from rsmq_core import AsyncRSMQ, NotReplicated
from support.redis_sentinel import SentinelGroup

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
        started = time.monotonic()  # a send begun before the kill does not show recovery
        try:
            tally.acked.add(await q.send_message(QUEUE, str(n)))
            if tally.first_ack is None and 0 < tally.kill_at < started:
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
                tally.first_ack, tally.kill_at = None, 0.0
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
                print(
                    f"min_replicas={min_replicas} failover {n}: recovered in {took:.2f}s, "
                    f"{lost} lost so far",
                    file=sys.stderr,
                )
            stop.set()
            tally.running.set()
            await asyncio.gather(*tasks)
        return [
            str(min_replicas),
            str(failovers),
            str(tally.sent),
            str(tally.lost),
            str(tally.unconfirmed),
            str(tally.failed),
            str(group.failovers()),
            f"{statistics.median(recoveries):.2f}",
            f"{max(recoveries):.2f}",
        ]
    finally:
        group.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failovers", type=int, default=10)
    parser.add_argument("--senders", type=int, default=20, help="concurrent sending coroutines")
    parser.add_argument("--traffic", type=float, default=2.0, help="seconds of sends per round")
    parser.add_argument("--down-after", type=int, default=1000, help="sentinel down-after, ms")
    args = parser.parse_args()
    exit_on_sigterm()
    header = [
        "min_replicas",
        "failovers",
        "acked sends",
        "acked lost",
        "unconfirmed",
        "failed",
        "by sentinel",
        "recover median s",
        "recover max s",
    ]
    rows = [
        asyncio.run(soak(mode, args.failovers, args.senders, args.traffic, args.down_after))
        for mode in (0, 1)
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for line in (header, ["-" * w for w in widths], *rows):
        print(" | ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)))


if __name__ == "__main__":
    main()
