"""A private Redis Cluster: N masters, no replicas, on free loopback ports.

Each master is an ``EmbeddedRedis`` (its own port and temporary folder) started in cluster mode
with its cluster config file and append-only file in that folder, so a master killed and started
again on its port comes back with its node id, its slots and its data. Three or more masters are
joined with ``redis-cli --cluster create``; one master simply takes every slot (redis-cli
refuses to create a cluster of fewer than three masters).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from rsmq_core import Keys
from rsmq_core.embedded import EmbeddedRedis, free_port, redis_server_binary

SLOTS = 16384
# The conftest's `backend` fixture, parametrized indirectly by modules that run on both.
BACKENDS = ("standalone", "cluster")
# Flags in CLUSTER NODES that mean a node is not (yet) a settled member of the cluster.
UNSETTLED_FLAGS = frozenset({"fail", "fail?", "handshake", "noaddr"})


def redis_cli_binary() -> str | None:
    """redis-cli beside the redis-server in use (the same release), else from PATH."""
    beside = Path(redis_server_binary()).with_name("redis-cli")
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("redis-cli")


def _major_version(binary: str, pattern: str) -> tuple[int | None, str]:
    said = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    match = re.search(pattern, said.stdout)
    return (int(match.group(1)) if match else None), said.stdout.strip()


def unavailable() -> str | None:
    """Why this machine cannot run a cluster here, or None when it can."""
    cli = redis_cli_binary()
    if cli is None:
        return "redis-cli is not on PATH (Debian: apt-get install redis-tools)"
    # cluster-port, CLUSTER ADDSLOTSRANGE and sharded pub/sub all arrived in 7.0, and an older
    # redis-cli joins the nodes as if each bus port were port + 10000, then waits forever.
    for binary, pattern in ((redis_server_binary(), r"v=(\d+)\."), (cli, r"redis-cli (\d+)\.")):
        major, version = _major_version(binary, pattern)
        if major is None or major < 7:
            return f"{binary} is not Redis 7 or later ({version or 'no version'})"
    return None


@dataclass(frozen=True)
class NodeView:
    """One line of CLUSTER NODES, as one node sees another."""

    node_id: str
    port: int
    flags: frozenset[str]
    link: str
    slots: tuple[str, ...]

    @property
    def master(self) -> bool:
        return "master" in self.flags


def parse_nodes(text: str) -> list[NodeView]:
    views = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split()
        address = fields[1].split("@")[0]
        views.append(
            NodeView(
                node_id=fields[0],
                port=int(address.rsplit(":", 1)[1]),
                flags=frozenset(fields[2].split(",")),
                link=fields[7],
                slots=tuple(fields[8:]),
            )
        )
    return views


class RedisCluster:
    """N masters that can be created, killed, started and restarted one at a time."""

    def __init__(self, masters: int = 3, *, persistent: bool = True) -> None:
        if masters < 1 or masters == 2:
            raise ValueError(
                f"masters must be 1 or at least 3 (redis-cli's minimum), not {masters}"
            )
        persistence = ["--appendonly", "yes"] if persistent else []
        self.nodes: list[EmbeddedRedis] = []
        for _ in range(masters):
            # The bus port is named, not left at port + 10000, which may be past 65535.
            args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            args += ["--cluster-port", str(free_port()), *persistence]
            self.nodes.append(EmbeddedRedis(*args))

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """Any one node's URL: a cluster client finds the others from it."""
        return self.nodes[0].url

    def create(self, timeout: float = 30) -> None:
        """Start every master, join them into one cluster and wait until it is ok."""
        for node in self.nodes:
            node.start()
        if len(self.nodes) == 1:
            with self._client(0) as r:
                r.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, SLOTS - 1)
        else:
            self._create()
        self.wait_ok(timeout)

    def _create(self) -> None:
        cli = redis_cli_binary()
        if cli is None:
            raise RuntimeError("redis-cli is not on PATH (Debian: apt-get install redis-tools)")
        args = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
        try:
            done = subprocess.run(
                [*args, "--cluster-replicas", "0", "--cluster-yes"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
            )
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"redis-cli --cluster create hung for 30s:\n{e.stdout!r}") from None
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")

    def _client(self, i: int) -> redis.Redis:
        return redis.Redis(port=self.nodes[i].port, socket_timeout=2, decode_responses=True)

    def views(self, i: int) -> list[NodeView]:
        """The cluster as master i sees it."""
        with self._client(i) as r:
            return parse_nodes(r.execute_command("CLUSTER", "NODES"))

    def _settled(self) -> bool:
        """Every node is ok, knows every other node as a connected, healthy master, and all
        of them agree on who owns which slots."""
        layouts = set()
        for i in range(len(self.nodes)):
            try:
                with self._client(i) as r:
                    info = r.execute_command("CLUSTER", "INFO")
                    nodes = parse_nodes(r.execute_command("CLUSTER", "NODES"))
            except redis.RedisError:
                return False
            if "cluster_state:ok" not in info:
                return False
            if sorted(v.port for v in nodes) != sorted(self.ports):
                return False
            for v in nodes:
                if not v.master or v.flags & UNSETTLED_FLAGS:
                    return False
                if "myself" not in v.flags and v.link != "connected":
                    return False
            layouts.add(frozenset((v.node_id, v.port, v.slots) for v in nodes))
        return len(layouts) == 1

    def wait_ok(self, timeout: float = 30) -> None:
        """Wait until the cluster is settled (see _settled); fail after the deadline."""
        deadline = time.monotonic() + timeout
        while not self._settled():
            if time.monotonic() > deadline:
                states = {p: self._describe(i) for i, p in enumerate(self.ports)}
                raise RuntimeError(f"cluster not ok after {timeout}s: {states}")
            time.sleep(0.05)

    def _describe(self, i: int) -> str:
        try:
            with self._client(i) as r:
                return str(r.execute_command("CLUSTER", "NODES"))
        except redis.RedisError as e:
            return f"unreachable ({e})"

    def owner(self, key: str) -> int:
        """The index of the master that holds key's slot."""
        with self._client(0) as r:
            slot = int(r.execute_command("CLUSTER", "KEYSLOT", key))
        for view in self.views(0):
            for span in view.slots:
                if span.startswith("["):  # a slot being migrated or imported
                    continue
                first, _, last = span.partition("-")
                if int(first) <= slot <= int(last or first):
                    return self.ports.index(view.port)
        raise LookupError(f"no master owns slot {slot} (key {key!r})")

    def queue_names(self, ns: str, per_master: int, prefix: str = "q") -> list[str]:
        """Queue names whose keys (the cluster layout's) put per_master queues on each master."""
        by_master: dict[int, list[str]] = {i: [] for i in range(len(self.nodes))}
        for n in range(100 * per_master * len(self.nodes)):
            name = f"{prefix}{n}"
            held = by_master[self.owner(Keys.of(ns, name, cluster=True).zset)]
            if len(held) < per_master:
                held.append(name)
            if all(len(names) == per_master for names in by_master.values()):
                return [name for i in sorted(by_master) for name in by_master[i]]
        raise LookupError(f"no {per_master} queue names per master among {n + 1} tried")

    def kill(self, i: int) -> None:
        """SIGKILL master i: no shutdown save, no goodbye to the other nodes."""
        self.nodes[i].stop(kill=True)

    def start(self, i: int, timeout: float = 30) -> None:
        """Start master i again on its port, folder and config, and wait until all is ok."""
        self.nodes[i].start()
        self.wait_ok(timeout)

    def restart(self, i: int, timeout: float = 30) -> None:
        """Kill master i and start it again (see kill and start)."""
        self.kill(i)
        self.start(i, timeout)

    def cleanup(self) -> None:
        """Stop every master and remove its folder."""
        for node in self.nodes:
            node.cleanup()
