"""What one GET /metrics costs: Redis round trips and commands, wall time, answer size.

Run from the repository root::

    .venv/bin/python -m bench.metrics                      # 100 queues, 20 workers
    .venv/bin/python -m bench.metrics --queues 1000 --workers 50 --scrapes 50

A redis-server of its own (``rsmq_core.embedded.EmbeddedRedis``, a free loopback port) holds
QUEUES queues with a message each, and WORKERS registry entries whose metrics (jobs of every
status, a handler time and a pickup in every queue) are written as workers write them, at a
heartbeat. Each scrape is ``web.metrics.read`` then the exposition, as the route runs them;
round trips and commands are counted on the scraping client's connection, and Redis's own
``INFO commandstats`` counts the calls too (the two must agree).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from realtime.metrics import JOB_STATUSES, MODES, Recorder
from realtime.registry import WorkerInfo, heartbeat
from rsmq_core import AsyncRSMQ
from rsmq_core.embedded import EmbeddedRedis
from web.metrics import exposition, read

NS = "bench"


class Counting(Connection):
    trips = 0
    commands = 0

    def pack_command(self, *args: Any) -> Any:
        Counting.commands += 1
        return super().pack_command(*args)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        Counting.trips += 1
        await super().send_packed_command(command, check_health)


async def setup(url: str, queues: int, workers: int) -> None:
    rsmq = AsyncRSMQ.from_url(url, ns=NS)
    names = [f"q{i:05d}" for i in range(queues)]
    for name in names:
        await rsmq.create_queue(name)
        await rsmq.send_message(name, "x")
    for i in range(workers):
        mode = MODES[i % 2]
        rec = Recorder(mode)
        for name in names:
            for status in JOB_STATUSES:
                rec.job(name, status)
            rec.duration(name, 0.2)
            rec.pickup(name, 1000.0, 1002.0)
        taken = rec.take()
        info = WorkerInfo(
            id=f"w{i:03d}", host="bench", pid=i, mode=mode, queues=names, concurrency=8, started=i
        )
        write = functools.partial(rec.write, taken=taken)
        await heartbeat(rsmq.redis, NS, info, ttl=3600, also=write)
    await rsmq.aclose()


async def calls(client: aioredis.Redis) -> int:
    stats: Any = await client.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


async def scrape(url: str, scrapes: int) -> dict[str, Any]:
    pool = aioredis.ConnectionPool.from_url(url, connection_class=Counting)
    client = aioredis.Redis.from_pool(pool)
    rsmq = AsyncRSMQ(client, ns=NS)
    await client.ping()
    times, size = [], 0
    Counting.trips = Counting.commands = 0
    before = await calls(client)
    for _ in range(scrapes):
        start = time.perf_counter()
        size = len(exposition(await read(rsmq)))
        times.append((time.perf_counter() - start) * 1000)
    # The first INFO: counted by the second (a command is counted once it has run)
    served = await calls(client) - before - 1
    trips, commands = Counting.trips - 2, Counting.commands - 2  # the two INFOs
    await client.aclose()
    return {
        "round trips": trips / scrapes,
        "commands": commands / scrapes,
        "commands (Redis's count)": served / scrapes,
        "ms, median": statistics.median(times),
        "ms, max": max(times),
        "bytes": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queues", type=int, default=100)
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args()
    server = EmbeddedRedis()
    server.start()
    try:
        asyncio.run(setup(server.url, args.queues, args.workers))
        result = asyncio.run(scrape(server.url, args.scrapes))
    finally:
        server.cleanup()
    print(f"GET /metrics, {args.queues} queues, {args.workers} workers, {args.scrapes} scrapes")
    for name, value in result.items():
        print(f"  {name:<26} {value:>10.1f}")


if __name__ == "__main__":
    main()
