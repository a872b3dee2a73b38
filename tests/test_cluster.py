"""rsmq-realtime on a 3-master Redis Cluster: where the keys land, a worker, a master restart,
the web app. (Every queue behaviour runs on the cluster too: tests/test_queue.py.)"""

from __future__ import annotations

import re
from collections import defaultdict

import redis

from rsmq_core import RSMQ
from tests.redis_cluster import RedisCluster


def keys_by_master(cluster: RedisCluster, pattern: str) -> dict[int, set[str]]:
    """The keys matching pattern that each master itself holds (a plain connection per node)."""
    held: dict[int, set[str]] = {}
    for i, port in enumerate(cluster.ports):
        with redis.Redis(port=port, decode_responses=True) as node:
            held[i] = set(node.scan_iter(match=pattern, count=1000))
    return held


def test_one_queue_one_slot_and_queues_spread_over_masters(redis_cluster, ns):
    names = [f"spread{n}" for n in range(12)]
    with RSMQ.from_url(redis_cluster.url, ns=ns, cluster=True) as q:
        for name in names:
            q.create_queue(name)
            q.send_message(name, "x")
        held = keys_by_master(redis_cluster, f"{ns}:*")
        masters_of: dict[str, set[int]] = defaultdict(set)
        for i, keys in held.items():
            for key in keys:
                for name in set(re.split(r"[:{}]", key)) & set(names):
                    masters_of[name].add(i)
        for name in names:
            k = q.keys(name)
            # Both of the queue's keys exist, on the one master that owns their shared slot.
            assert masters_of[name] == {redis_cluster.owner(k.zset)}, name
            assert {k.zset, k.hash} <= held[redis_cluster.owner(k.zset)]
        assert {i for m in masters_of.values() for i in m} == {0, 1, 2}
        assert sorted(q.list_queues()) == sorted(names)
