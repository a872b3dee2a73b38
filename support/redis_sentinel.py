"""A private Redis Sentinel group: a master, its replicas and three sentinels on loopback ports.

Each server is an ``EmbeddedRedis`` (its own free port and temporary folder). The sentinels
judge a master down after half a second and may retry a failover after two, so a test that
kills the master sees a replica promoted within a few seconds. Nothing here sleeps on hope:
start and failover wait on what the sentinels and servers say, with a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from rsmq_core.embedded import EmbeddedRedis

SERVICE = "rsmq-test"
DOWN_AFTER_MS = 500
FAILOVER_TIMEOUT_MS = 2000
# Replicas sync at once, without the 5 s a diskless sync waits for more replicas by default.
SYNC_ARGS = ("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """``check()``'s first true result, polled until ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
        except redis.RedisError:
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


class SentinelServer(EmbeddedRedis):
    """redis-server in sentinel mode, with a config file of its own (sentinels rewrite it)."""

    def __init__(self, master_port: int, quorum: int, down_after_ms: int) -> None:
        super().__init__()
        self.conf = Path(self.dir) / "sentinel.conf"
        self.conf.write_text(
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )

    def listen_args(self) -> list[str]:
        return [str(self.conf), "--sentinel", *super().listen_args()]


class SentinelGroup:
    """``replicas`` replicas of one master, watched by three sentinels (quorum two) that judge
    it down after ``down_after_ms`` without an answer."""

    def __init__(self, replicas: int = 1, down_after_ms: int = DOWN_AFTER_MS) -> None:
        self.down_after_ms = down_after_ms
        self.nodes = [EmbeddedRedis(*SYNC_ARGS) for _ in range(1 + replicas)]
        self.sentinels: list[SentinelServer] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> None:
        """Start every server and wait until the sentinels know the replicas and each other."""
        master, *replicas = self.nodes
        master.start()
        for node in replicas:
            node.extra_args = (*SYNC_ARGS, "--replicaof", "127.0.0.1", str(master.port))
            node.start()
        self.sentinels = [
            SentinelServer(master.port, quorum=2, down_after_ms=self.down_after_ms)
            for _ in range(3)
        ]
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_ready()

    def wait_ready(self) -> EmbeddedRedis:
        """Wait until the master has every live replica in sync and every sentinel sees them
        and the other sentinels (a failover needs both); returns the master."""
        live = sum(1 for n in self.nodes if n.proc is not None)

        def ready() -> EmbeddedRedis | None:
            master = self.master()
            with master.client(socket_timeout=1) as r:
                info = r.info("replication")
            online = sum(
                1 for k, v in info.items() if k.startswith("slave") and v.get("state") == "online"
            )
            if info["role"] != "master" or online != live - 1:
                return None
            for sentinel in self.sentinels:
                with sentinel.client(socket_timeout=1, decode_responses=True) as s:
                    state = s.sentinel_master(SERVICE)
                    replicas = s.sentinel_slaves(SERVICE)
                healthy = sum(1 for x in replicas if not x["is_sdown"] and not x["is_odown"])
                if state["num-other-sentinels"] != 2 or healthy != live - 1:
                    return None
                if state["port"] != master.port or state["is_sdown"]:
                    return None
            return master

        ready_master: EmbeddedRedis = wait_for("the sentinel group to be ready", ready, 30)
        return ready_master

    def master_port(self) -> int:
        """The master's port, as the first sentinel that answers says."""
        for sentinel in self.sentinels:
            try:
                with sentinel.client(socket_timeout=1) as s:
                    _, port = s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                return int(port)
            except redis.RedisError:
                continue
        raise redis.ConnectionError("no sentinel answers")

    def failovers(self) -> int:
        """How many failovers the sentinels have made (the configuration epoch)."""
        with self.sentinels[0].client(socket_timeout=1) as s:
            return int(s.sentinel_master(SERVICE)["config-epoch"])

    def master(self) -> EmbeddedRedis:
        port = self.master_port()
        return next(n for n in self.nodes if n.port == port)

    def kill_master(self) -> EmbeddedRedis:
        """kill -9 the master; returns it (stopped)."""
        master = self.master()
        master.stop(kill=True)
        return master

    def wait_failover(self, old: EmbeddedRedis, timeout: float = 30.0) -> EmbeddedRedis:
        """Wait until every sentinel names another master than ``old`` and it says it is
        master; returns it."""

        def promoted() -> EmbeddedRedis | None:
            ports = set()
            for sentinel in self.sentinels:
                with sentinel.client(socket_timeout=1) as s:
                    _, port = s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                ports.add(int(port))
            if len(ports) != 1 or old.port in ports:
                return None
            new = next(n for n in self.nodes if n.port in ports)
            with new.client(socket_timeout=1) as r:
                return new if r.info("replication")["role"] == "master" else None

        new_master: EmbeddedRedis = wait_for("a replica to be promoted", promoted, timeout)
        return new_master

    def rejoin(self, node: EmbeddedRedis) -> None:
        """Start a stopped server again as a replica of the current master, and wait until
        the group is whole again."""
        master = self.master_port()
        if master == node.port:
            raise RuntimeError("the sentinels still name the stopped server master")
        node.extra_args = (*SYNC_ARGS, "--replicaof", "127.0.0.1", str(master))
        node.start()
        self.wait_ready()

    def cleanup(self) -> None:
        for server in [*self.sentinels, *self.nodes]:
            server.cleanup()
