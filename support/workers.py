"""Worker processes under test: `python -m worker` with the test handler, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

from rsmq_core import Keys

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll a condition until it holds; fail after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class WorkerProcess:
    def __init__(
        self,
        redis_url: str,
        ns: str,
        *,
        cluster: bool = False,
        admin: Callable[[], redis.Redis] | None = None,
        **settings: Any,
    ) -> None:
        """``cluster``: REDIS_URL names a node of a Redis Cluster (REDIS_CLUSTER=1).
        ``admin`` makes the client that watches the worker start (a plain one by default;
        on a cluster, one per master)."""
        self.redis_url = redis_url
        self.ns = ns
        self.cluster = cluster
        self.admin = admin or (lambda: redis.Redis.from_url(redis_url))
        unset = ("REALTIME", "QUEUES", "REDIS_CLUSTER")
        self.env = {k: v for k, v in os.environ.items() if k not in unset}
        self.env.update(
            REDIS_URL=redis_url,
            RSMQ_NS=ns,
            QUEUES="jobs",
            HANDLER="tests.handlers:record",  # the tests' recording handler, unless named
            PYTHONPATH=str(ROOT),
            HEARTBEAT="0.5",
        )
        if cluster:
            self.env["REDIS_CLUSTER"] = "1"
        self.env.update({k.upper(): str(v) for k, v in settings.items()})
        self.log = tempfile.NamedTemporaryFile(prefix="worker-", suffix=".log", delete=False)
        self.err = tempfile.NamedTemporaryFile(prefix="worker-", suffix=".err", delete=False)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, ready: bool = True) -> WorkerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker"],
            env=self.env,
            cwd=ROOT,
            stdout=self.log,
            stderr=self.err,
        )
        if ready:
            self.wait_ready()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_ready(self, timeout: float = 15) -> None:
        """Registered, and in realtime mode subscribed to every queue's channel."""
        queues = self.env["QUEUES"].split(",")
        realtime = self.env.get("REALTIME", "true").lower() in ("1", "true", "yes", "on")
        channels = [Keys.of(self.ns, q, cluster=self.cluster).channel for q in queues]
        nodes = primaries(self.redis_url) if self.cluster else [self.admin()]

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.output()}")
            pids = set()
            for node in nodes:
                # The registry's keys, in whatever slot the layout puts them: *@workers:<id>.
                # One GET each: on a cluster node an MGET across slots is refused.
                values = [node.get(key) for key in node.keys(f"*{self.ns}*@workers*:*")]
                pids |= {json.loads(v)["pid"] for v in values if v}
            if self.pid not in pids:
                return False
            return not realtime or all(n >= 1 for n in subscribers(nodes, channels, self.cluster))

        try:
            wait_for(ready, timeout, "the worker to be ready")
        finally:
            for node in nodes:
                node.close()

    def stdout(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stderr(self) -> str:
        return Path(self.err.name).read_text(errors="replace")

    def output(self) -> str:
        """Both streams, stdout first."""
        return self.stdout() + self.stderr()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for file in (self.log, self.err):
            file.close()
            os.unlink(file.name)


def primaries(url: str) -> list[redis.Redis]:
    """A plain client on each master of the cluster that url names a node of."""
    with redis.RedisCluster.from_url(url) as cluster:
        return [redis.Redis(host=n.host, port=n.port) for n in cluster.get_primaries()]


def subscribers(nodes: list[redis.Redis], channels: list[str], cluster: bool) -> list[int]:
    """Each channel's subscribers over all nodes, on a cluster plain and sharded (a client
    subscribes on one node, so each node counts only its own)."""
    counts = [0] * len(channels)
    for node in nodes:
        replies = [node.execute_command("PUBSUB", "NUMSUB", *channels)]
        if cluster:  # Redis 7 (the cluster's minimum); a standalone 6.2 knows no SHARDNUMSUB
            replies.append(node.execute_command("PUBSUB", "SHARDNUMSUB", *channels))
        for reply in replies:
            for i, n in enumerate(reply[1::2]):
                counts[i] += int(n)
    return counts
