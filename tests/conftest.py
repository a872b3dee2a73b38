from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from rsmq_core import RSMQ, AsyncRSMQ
from support.redis_cluster import RedisCluster, unavailable
from support.redis_server import ENV, RedisServer, selected, server_binary
from support.web import WebProcess
from web.app import create_app
from web.settings import Settings

# Fails the run if a test left a process running (see tests/leftovers.py).
pytest_plugins = ["tests.leftovers"]


def pytest_report_header() -> str:
    """Which server the run's standalone tests start (see support/redis_server.py)."""
    return f"{ENV}={selected() or '(unset)'}: {server_binary()}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


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


@dataclass(frozen=True)
class Backend:
    """Where a test's queues live: the suite's redis-server, or its Redis Cluster."""

    url: str
    cluster: bool


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Backend:
    """The standalone server, unless a module parametrizes this indirectly with "cluster"
    (``pytest.mark.parametrize("backend", BACKENDS, indirect=True)``)."""
    if getattr(request, "param", "standalone") == "cluster":
        return Backend(request.getfixturevalue("redis_cluster").url, cluster=True)
    return Backend(request.getfixturevalue("redis_url"), cluster=False)


@pytest.fixture
def r(backend: Backend) -> Iterator[redis.Redis]:
    """A plain redis-py client (a cluster client on the cluster), to look at the keys."""
    client: Any = (
        redis.RedisCluster.from_url(backend.url, decode_responses=True)
        if backend.cluster
        else redis.Redis.from_url(backend.url, decode_responses=True)
    )
    with client:
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
            result = method(*args, **kwargs)
            # keys() is plain on both clients; everything else is a coroutine here.
            return self._runner.run(result) if inspect.iscoroutine(result) else result

        return call


@pytest.fixture(params=["sync", "async"])
def rsmq(request: pytest.FixtureRequest, backend: Backend, ns: str) -> Iterator[Any]:
    """Every behaviour test runs once with RSMQ and once with AsyncRSMQ."""
    url, cluster = backend.url, backend.cluster
    if request.param == "sync":
        with RSMQ.from_url(url, ns=ns, cluster=cluster) as client:
            yield client
    else:
        with asyncio.Runner() as runner:
            aclient = AsyncRSMQ.from_url(url, ns=ns, cluster=cluster)
            yield SyncDriven(aclient, runner)
            runner.run(aclient.aclose())


@pytest.fixture
def make_client(redis_url: str, ns: str) -> Iterator[Callable[..., TestClient]]:
    """The web app in-process (Starlette's TestClient), with settings given; closed after."""
    clients: list[TestClient] = []

    def make(**settings: Any) -> TestClient:
        # TestClient's requests say Host: testserver
        settings = {"redis_url": redis_url, "ns": ns, "allowed_hosts": ("testserver",), **settings}
        client = TestClient(create_app(Settings(**settings)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def start(redis_url: str, ns: str) -> Iterator[Callable[..., WebProcess]]:
    """``python -m web`` on the test's Redis with the settings given; stopped after."""
    started: list[WebProcess] = []

    def run(**settings: Any) -> WebProcess:
        started.append(WebProcess(redis_url, ns, **settings))
        return started[-1]

    yield run
    for process in started:
        process.stop()


@pytest.fixture
def queues(redis_url: str, ns: str) -> Iterator[RSMQ]:
    """A sync client on the test's namespace of the session's Redis."""
    with RSMQ.from_url(redis_url, ns=ns) as client:
        yield client
