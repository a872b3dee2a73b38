from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from rsmq_core import RSMQ, AsyncRSMQ
from tests.redis_cluster import RedisCluster, unavailable
from tests.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """Three masters, no replicas; tests restart masters but leave the cluster ok."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"no Redis Cluster: {reason}")
    cluster = RedisCluster(3)
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def ns() -> str:
    """A namespace of the test's own: tests share one server and never flush it."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client, to look at the keys themselves."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        yield client


class SyncDriven:
    """Drives an AsyncRSMQ from synchronous test code, so one test runs against both clients."""

    def __init__(self, client: AsyncRSMQ, runner: asyncio.Runner) -> None:
        self._client = client
        self._runner = runner
        self.ns = client.ns
        self.redis = client.redis

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._runner.run(method(*args, **kwargs))

        return call


@pytest.fixture(params=["sync", "async"])
def rsmq(request: pytest.FixtureRequest, redis_url: str, ns: str) -> Iterator[Any]:
    """Every behaviour test runs once with RSMQ and once with AsyncRSMQ."""
    if request.param == "sync":
        with RSMQ.from_url(redis_url, ns=ns) as client:
            yield client
    else:
        with asyncio.Runner() as runner:
            aclient = AsyncRSMQ.from_url(redis_url, ns=ns)
            yield SyncDriven(aclient, runner)
            runner.run(aclient.aclose())
