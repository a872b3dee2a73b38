"""Wire compatibility with the real Node.js ``rsmq`` package (0.12.4), both ways.

Node RSMQ runs in one ``node`` process per module (``tests/node/rsmq_ops.js``), driven one JSON
line per request; a realtime subscriber is another ``node`` process (``tests/node/subscribe.js``)
using the ``redis`` client (3.x) that rsmq itself depends on. Node and Python share the test's
Redis and its namespace, so every test sees only its own queues.

The Python side is each of ``RSMQ`` and ``AsyncRSMQ`` (the ``rsmq`` fixture of conftest).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
import redis

from rsmq_core import RSMQ, AsyncRSMQ, Message, QueueExists, QueueNotFound, RSMQError
from tests.conftest import SyncDriven

pytestmark = pytest.mark.node

REPO = Path(__file__).resolve().parents[1]
NODE_PREFIX = REPO / ".node"
NODE_MODULES = NODE_PREFIX / "node_modules"
NODE_SCRIPTS = Path(__file__).resolve().parent / "node"
RSMQ_PACKAGE = "rsmq@0.12.4"
ID_RE = re.compile(r"^[a-zA-Z0-9:]{32}$")
ANSWER_TIMEOUT = 10.0  # seconds to wait for any one answer from a node process
QUEUE_FIELDS = {"vt", "delay", "maxsize", "created", "modified", "totalsent", "totalrecv"}
# Attributes of ours that Node RSMQ has not: left out where Python's are compared with Node's.
OURS = ("dedup_window", "retention", "totalexpired")

T = TypeVar("T")


# Installing and running Node RSMQ ------------------------------------------------------------


def installed_version(package: str) -> str | None:
    try:
        version = json.loads((NODE_MODULES / package / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None
    return str(version)


def as_text(data: str | bytes | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


def npm_install(spec: str, needed_by: str) -> Path:
    """``.node/node_modules`` holding ``spec`` (``name@version``, pinned), installed with npm
    on first use; the tests of ``needed_by`` are skipped where node or npm is missing."""
    package, _, version = spec.rpartition("@")
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        pytest.skip(f"node/npm not found: {needed_by} need them")
    if installed_version(package) != version:
        args = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NODE_PREFIX)]
        try:
            done = subprocess.run(
                [*args, spec], capture_output=True, text=True, timeout=50, check=False
            )
            output, code = done.stdout + done.stderr, str(done.returncode)
        except subprocess.TimeoutExpired as exc:
            output, code = f"{as_text(exc.stdout)}{as_text(exc.stderr)}", "timeout after 50 s"
        installed = installed_version(package)
        if code != "0" or installed != version:
            pytest.fail(
                f"`npm install {spec}` failed (exit {code}, installed {package} {installed}):\n"
                f"{output}",
                pytrace=False,
            )
    return NODE_MODULES


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """``.node/node_modules`` holding rsmq 0.12.4, installed with npm on first use."""
    return npm_install(RSMQ_PACKAGE, "the Node RSMQ compatibility tests")


class NodeProcess:
    """A node script whose stdout lines are read on a thread, so tests wait with deadlines."""

    def __init__(self, node_modules: Path, script: str, *args: str) -> None:
        node = shutil.which("node")
        assert node is not None
        self.script = script
        self.proc = subprocess.Popen(
            [node, str(NODE_SCRIPTS / script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env={**os.environ, "NODE_PATH": str(node_modules)},
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def write(self, obj: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def read(self, deadline: float) -> Any:
        """The next line of JSON, waiting until ``deadline`` (``time.monotonic()``) at most."""
        try:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(
                f"{self.script}: no output in time; stderr:\n{''.join(self._stderr)}"
            ) from None
        if line is None:
            self._lines.put(None)
            raise AssertionError(
                f"{self.script} exited ({self.proc.wait(5)}); stderr:\n{''.join(self._stderr)}"
            )
        return json.loads(line)

    def close(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except OSError:
            pass  # it exited already
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for thread in self._threads:
            thread.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


class NodeRSMQError(Exception):
    """An error Node RSMQ answered with; ``name`` is RSMQ's (``queueNotFound``, ...),
    ``message`` its text."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class NodeRSMQDriver:
    """Requests to ``rsmq_ops.js``, each answered in order (a late answer is skipped)."""

    def __init__(self, process: NodeProcess) -> None:
        self.process = process
        self._last_id = 0

    def request(self, **payload: Any) -> list[dict[str, Any]]:
        self._last_id += 1
        self.process.write({"id": self._last_id, **payload})
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while True:
            reply = self.process.read(deadline)
            if reply["id"] == self._last_id:
                results: list[dict[str, Any]] = reply["results"]
                return results


class NodeRSMQ:
    """A Node ``RedisSMQ({ns, realtime})`` client; ``call`` runs one of its methods."""

    def __init__(self, driver: NodeRSMQDriver, ns: str, *, realtime: bool = False) -> None:
        self.driver = driver
        self.ns = ns
        self.realtime = realtime

    def with_realtime(self) -> NodeRSMQ:
        return NodeRSMQ(self.driver, self.ns, realtime=True)

    def call(self, op: str, **options: Any) -> Any:
        """``await rsmq.<op>Async(options)``: its value, or NodeRSMQError."""
        [result] = self.driver.request(
            ns=self.ns, realtime=self.realtime, ops=[{"op": op, "args": options}]
        )
        if "error" in result:
            raise NodeRSMQError(result["error"]["name"], result["error"]["message"])
        return result["ok"]

    def send(self, qname: str, message: str, **options: Any) -> str:
        sent: str = self.call("sendMessage", qname=qname, message=message, **options)
        return sent

    def receive(self, qname: str, **options: Any) -> dict[str, Any] | None:
        """RSMQ answers ``{}`` when no message is visible: None here."""
        return self.call("receiveMessage", qname=qname, **options) or None

    def pop(self, qname: str) -> dict[str, Any] | None:
        return self.call("popMessage", qname=qname) or None

    def attributes(self, qname: str) -> dict[str, Any]:
        attributes: dict[str, Any] = self.call("getQueueAttributes", qname=qname)
        return attributes


def host_and_port(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", str(parts.port or 6379)


@pytest.fixture(scope="module")
def node_driver(node_modules: Path, redis_server: Any) -> Iterator[NodeRSMQDriver]:
    """One node process for the module, on the test suite's own Redis."""
    process = NodeProcess(node_modules, "rsmq_ops.js", *host_and_port(redis_server.url))
    yield NodeRSMQDriver(process)
    process.close()


@pytest.fixture
def node(node_driver: NodeRSMQDriver, ns: str) -> Iterator[NodeRSMQ]:
    """Node RSMQ in the test's namespace (the Python clients use the same one)."""
    yield NodeRSMQ(node_driver, ns)
    node_driver.request(ns=ns, close=True)


@pytest.fixture
def subscribe(node_modules: Path, redis_url: str) -> Iterator[Callable[..., NodeProcess]]:
    """Starts a node SUBSCRIBE on the given channels and waits until it is subscribed."""
    started: list[NodeProcess] = []

    def start(*channels: str) -> NodeProcess:
        process = NodeProcess(node_modules, "subscribe.js", *host_and_port(redis_url), *channels)
        started.append(process)
        ready = process.read(time.monotonic() + ANSWER_TIMEOUT)
        assert ready["ready"] is True
        # rsmq 0.12.4 depends on redis ^3.1.2: the subscriber speaks through that client.
        assert ready["redis"].startswith("3."), ready
        return process

    yield start
    for process in started:
        process.close()


@pytest.fixture(params=["sync", "async"])
def rsmq_realtime(request: pytest.FixtureRequest, redis_url: str, ns: str) -> Iterator[Any]:
    """RSMQ or AsyncRSMQ with realtime=True, in the test's namespace."""
    if request.param == "sync":
        with RSMQ.from_url(redis_url, ns=ns, realtime=True) as client:
            yield client
    else:
        with asyncio.Runner() as runner:
            aclient = AsyncRSMQ.from_url(redis_url, ns=ns, realtime=True)
            yield SyncDriven(aclient, runner)
            runner.run(aclient.aclose())


# Helpers ---------------------------------------------------------------------------------------


def now_us(r: redis.Redis) -> int:
    """The Redis server's clock in microseconds (RSMQ reads time from Redis only)."""
    seconds, micros = r.time()
    return int(seconds) * 1_000_000 + int(micros)


def now_ms(r: redis.Redis) -> int:
    return now_us(r) // 1000


def id_time_us(mid: str) -> int:
    """The send time an RSMQ id starts with: microseconds, 10 base-36 characters."""
    return int(mid[:10], 36)


def as_dict(message: Message | None) -> dict[str, Any] | None:
    """A Python message in Node RSMQ's shape ({id, message, rc, fr, sent})."""
    return None if message is None else dataclasses.asdict(message)


def message_fields(r: redis.Redis, ns: str, qname: str) -> set[str]:
    """The queue hash's per-message fields (bodies, :rc, :fr)."""
    return {str(field) for field in r.hkeys(f"{ns}:{qname}:Q")} - QUEUE_FIELDS


def within_one_second(r: redis.Redis, read: Callable[[], T]) -> T:
    """``read()`` run until it starts and ends in one second of the Redis clock.

    ``hiddenmsgs`` counts from the start of the current second, so two reads agree only when
    they see the same second.
    """
    deadline = time.monotonic() + 5
    while True:
        before = r.time()[0]
        value = read()
        if r.time()[0] == before:
            return value
        assert time.monotonic() < deadline, "could not read within one second of Redis time"


def attributes_agree(rsmq: Any, node: NodeRSMQ, r: redis.Redis, qname: str) -> dict[str, Any]:
    """Node's getQueueAttributes == Python's get_queue_attributes, all nine of RSMQ's fields
    (Python's also has OURS); returns them.

    hiddenmsgs is also checked against the keys themselves, as RSMQ defines it.
    """

    def read() -> tuple[dict[str, Any], dict[str, Any], int]:
        from_node = node.attributes(qname)
        from_python = dataclasses.asdict(rsmq.get_queue_attributes(qname))
        for ours in OURS:
            del from_python[ours]
        seconds = int(r.time()[0])
        return from_node, from_python, r.zcount(f"{rsmq.ns}:{qname}", seconds * 1000, "+inf")

    from_node, from_python, hidden = within_one_second(r, read)
    assert from_python == from_node
    assert from_node["hiddenmsgs"] == hidden
    assert from_node["msgs"] == r.zcard(f"{rsmq.ns}:{qname}")
    return from_node


# 1. Messages, both ways ------------------------------------------------------------------------


def test_node_sends_python_receives_and_deletes(
    rsmq: Any, node: NodeRSMQ, r: redis.Redis, ns: str
) -> None:
    rsmq.create_queue("n2p")
    before = now_us(r)
    mid = node.send("n2p", "from node")
    after = now_us(r)
    assert ID_RE.fullmatch(mid)
    assert before <= id_time_us(mid) <= after

    before = now_ms(r)
    got = rsmq.receive_message("n2p")
    after = now_ms(r)
    assert got is not None
    assert (got.id, got.message, got.rc) == (mid, "from node", 1)
    assert before <= got.fr <= after
    assert got.sent == id_time_us(mid) / 1000
    assert rsmq.receive_message("n2p") is None  # hidden for the queue's vt

    assert rsmq.delete_message("n2p", mid) is True
    assert rsmq.delete_message("n2p", mid) is False
    assert message_fields(r, ns, "n2p") == set()
    assert node.receive("n2p") is None
    attributes = node.attributes("n2p")
    assert (attributes["msgs"], attributes["totalsent"], attributes["totalrecv"]) == (0, 1, 1)


def test_python_sends_node_receives_and_deletes(
    rsmq: Any, node: NodeRSMQ, r: redis.Redis, ns: str
) -> None:
    node.call("createQueue", qname="p2n")
    before = now_us(r)
    mid = rsmq.send_message("p2n", "from python")
    after = now_us(r)
    assert ID_RE.fullmatch(mid)
    assert before <= id_time_us(mid) <= after

    before = now_ms(r)
    got = node.receive("p2n")
    after = now_ms(r)
    assert got is not None
    assert got == {
        "id": mid,
        "message": "from python",
        "rc": 1,
        "fr": got["fr"],
        "sent": id_time_us(mid) / 1000,
    }
    assert before <= got["fr"] <= after
    assert node.receive("p2n") is None  # hidden for the queue's vt

    assert node.call("deleteMessage", qname="p2n", id=mid) == 1
    assert node.call("deleteMessage", qname="p2n", id=mid) == 0
    assert message_fields(r, ns, "p2n") == set()
    assert rsmq.receive_message("p2n") is None
    attributes = rsmq.get_queue_attributes("p2n")
    assert (attributes.msgs, attributes.totalsent, attributes.totalrecv) == (0, 1, 1)


# 2. Queues and their attributes ----------------------------------------------------------------


def test_create_queue_writes_the_same_hash(
    rsmq: Any, node: NodeRSMQ, r: redis.Redis, ns: str
) -> None:
    before = int(r.time()[0])
    node.call("createQueue", qname="by-node", vt=45, delay=2, maxsize=-1)
    rsmq.create_queue("by-python", vt=45, delay=2, maxsize=-1)
    after = int(r.time()[0])

    by_node, by_python = r.hgetall(f"{ns}:by-node:Q"), r.hgetall(f"{ns}:by-python:Q")
    assert set(by_node) == set(by_python) == {"vt", "delay", "maxsize", "created", "modified"}
    for stored in (by_node, by_python):
        assert (stored["vt"], stored["delay"], stored["maxsize"]) == ("45", "2", "-1")
        assert stored["created"] == stored["modified"]
        assert before <= int(stored["created"]) <= after
    assert r.smembers(f"{ns}:QUEUES") == {"by-node", "by-python"}
    assert sorted(node.call("listQueues")) == rsmq.list_queues() == ["by-node", "by-python"]

    with pytest.raises(QueueExists):
        rsmq.create_queue("by-node")
    with pytest.raises(NodeRSMQError) as refused:
        node.call("createQueue", qname="by-python")
    assert refused.value.name == "queueExists"


def test_queue_created_by_node_attributes_agree(
    rsmq: Any, node: NodeRSMQ, r: redis.Redis, ns: str
) -> None:
    node.call("createQueue", qname="attrs", vt=45, maxsize=2048)
    created = attributes_agree(rsmq, node, r, "attrs")
    assert created["vt"] == 45 and created["delay"] == 0 and created["maxsize"] == 2048
    assert created["totalsent"] == created["totalrecv"] == created["msgs"] == 0
    assert created["created"] == created["modified"]
    made = created["created"] - 100  # as if made earlier, so a change's `modified` stands out
    r.hset(f"{ns}:attrs:Q", mapping={"created": made, "modified": made})

    first = node.send("attrs", "a")
    rsmq.send_message("attrs", "b")
    rsmq.send_message("attrs", "c", delay=600)
    node.send("attrs", "d", delay=600)
    received = node.receive("attrs")
    assert received is not None and received["id"] == first
    busy = attributes_agree(rsmq, node, r, "attrs")
    assert (busy["totalsent"], busy["totalrecv"], busy["msgs"]) == (4, 1, 4)
    assert busy["created"] == busy["modified"] == made
    # a (received), c and d (delayed) are hidden; b too while its send second lasts.
    assert busy["hiddenmsgs"] in (3, 4)

    before = int(r.time()[0])
    changed = node.call("setQueueAttributes", qname="attrs", vt=60, delay=5, maxsize=-1)
    after = int(r.time()[0])
    now = attributes_agree(rsmq, node, r, "attrs")
    assert (now["vt"], now["delay"], now["maxsize"]) == (60, 5, -1)
    assert before <= now["modified"] <= after and now["created"] == made
    assert {k: v for k, v in changed.items() if k != "hiddenmsgs"} == {
        k: v for k, v in now.items() if k != "hiddenmsgs"
    }

    r.hset(f"{ns}:attrs:Q", "modified", made)
    before = int(r.time()[0])
    from_python = dataclasses.asdict(rsmq.set_queue_attributes("attrs", vt=7, maxsize=1024))
    for ours in OURS:
        del from_python[ours]
    after = int(r.time()[0])
    now = attributes_agree(rsmq, node, r, "attrs")
    assert (now["vt"], now["delay"], now["maxsize"]) == (7, 5, 1024)
    assert before <= now["modified"] <= after and now["created"] == made
    assert {k: v for k, v in from_python.items() if k != "hiddenmsgs"} == {
        k: v for k, v in now.items() if k != "hiddenmsgs"
    }

    # Python deletes Node's queue: gone for both.
    rsmq.delete_queue("attrs")
    with pytest.raises(NodeRSMQError) as missing:
        node.attributes("attrs")
    assert missing.value.name == "queueNotFound"
    assert node.call("listQueues") == []
    assert r.keys(f"{ns}:*") == []


def test_queue_created_by_python_attributes_agree(
    rsmq: Any, node: NodeRSMQ, r: redis.Redis, ns: str
) -> None:
    rsmq.create_queue("attrs")
    created = attributes_agree(rsmq, node, r, "attrs")
    assert (created["vt"], created["delay"], created["maxsize"]) == (30, 0, 65536)
    assert created["totalsent"] == created["totalrecv"] == created["msgs"] == 0
    assert created["created"] == created["modified"]
    made = created["created"] - 100  # as if made earlier, so a change's `modified` stands out
    r.hset(f"{ns}:attrs:Q", mapping={"created": made, "modified": made})

    rsmq.send_message("attrs", "a")
    node.send("attrs", "b")
    node.send("attrs", "c", delay=600)
    assert rsmq.receive_message("attrs") is not None
    assert rsmq.receive_message("attrs") is not None
    busy = attributes_agree(rsmq, node, r, "attrs")
    assert (busy["totalsent"], busy["totalrecv"], busy["msgs"], busy["hiddenmsgs"]) == (3, 2, 3, 3)
    assert busy["created"] == busy["modified"] == made

    before = int(r.time()[0])
    rsmq.set_queue_attributes("attrs", delay=9)
    after = int(r.time()[0])
    now = attributes_agree(rsmq, node, r, "attrs")
    assert (now["vt"], now["delay"], now["maxsize"]) == (30, 9, 65536)
    assert before <= now["modified"] <= after and now["created"] == made

    r.hset(f"{ns}:attrs:Q", "modified", made)
    before = int(r.time()[0])
    node.call("setQueueAttributes", qname="attrs", vt=0, maxsize=4096)
    after = int(r.time()[0])
    now = attributes_agree(rsmq, node, r, "attrs")
    assert (now["vt"], now["delay"], now["maxsize"]) == (0, 9, 4096)
    assert before <= now["modified"] <= after and now["created"] == made
    # The vt and delay Node set rule Python's sends and receives.
    before = now_ms(r)
    delayed = rsmq.send_message("attrs", "d")
    score = r.zscore(f"{ns}:attrs", delayed)
    assert score is not None and score >= before + 9000
    now_visible = rsmq.send_message("attrs", "e", delay=0)
    first = rsmq.receive_message("attrs")  # vt 0: visible again at once
    again = rsmq.receive_message("attrs")
    assert first is not None and again is not None
    assert (first.id, first.rc, again.id, again.rc) == (now_visible, 1, now_visible, 2)

    # Node deletes Python's queue: gone for both.
    assert node.call("deleteQueue", qname="attrs") == 1
    with pytest.raises(QueueNotFound):
        rsmq.get_queue_attributes("attrs")
    assert rsmq.list_queues() == []
    # Node's deleteQueue knows only RSMQ's keys: what is left is our sends' retry markers,
    # which expire by themselves (see send.lua).
    left = r.keys(f"{ns}:*")
    assert all(k.startswith(rsmq.keys("attrs").zset + ":sent:") for k in left)
    assert all(0 < r.ttl(k) <= 90 for k in left)


# 3. Realtime -----------------------------------------------------------------------------------


def test_realtime_publish_is_what_node_rsmq_publishes(
    rsmq_realtime: Any,
    node: NodeRSMQ,
    r: redis.Redis,
    ns: str,
    subscribe: Callable[..., NodeProcess],
) -> None:
    node_rt = node.with_realtime()
    by_node, by_python = f"{ns}:rt:by-node", f"{ns}:rt:by-python"
    # The same situation in two queues: two messages, one received (hidden), one delayed.
    for qname in ("by-node", "by-python"):
        node.call("createQueue", qname=qname)
        node.send(qname, "x")
        node.send(qname, "y", delay=600)
        assert node.receive(qname) is not None
    subscriber = subscribe(by_node, by_python)

    node_rt.send("by-node", "rt")  # RSMQ publishes ZCARD after the send: "3"
    rsmq_realtime.send_message("by-python", "rt")  # so must we
    # Receiving publishes nothing, on either side.
    assert node_rt.receive("by-python") is not None
    assert rsmq_realtime.receive_message("by-node") is not None
    rsmq_realtime.send_message("by-node", "rt2", delay=30)  # "4": ZCARD counts hidden ones
    node_rt.send("by-python", "rt2", delay=30)
    rsmq_realtime.send_message("by-python", "rt3")  # "5"
    r.publish(by_node, "end")  # the last message: what came before is everything published

    heard: list[tuple[str, str]] = []
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while not heard or heard[-1] != (by_node, "end"):
        got = subscriber.read(deadline)
        heard.append((got["channel"], got["message"]))
    assert heard == [
        (by_node, "3"),  # Node RSMQ
        (by_python, "3"),  # Python, same situation
        (by_node, "4"),  # Python
        (by_python, "4"),  # Node RSMQ, same situation
        (by_python, "5"),  # Python
        (by_node, "end"),
    ]
    assert (r.zcard(f"{ns}:by-node"), r.zcard(f"{ns}:by-python")) == (4, 5)


# 4. Ids and order ------------------------------------------------------------------------------


@pytest.mark.parametrize("first_receiver", ["node", "python"])
def test_ids_from_both_sort_in_send_order(
    first_receiver: str, rsmq: Any, node: NodeRSMQ, r: redis.Redis, ns: str
) -> None:
    rsmq.create_queue("order")
    sent: list[tuple[str, str]] = []
    for i in range(10):
        body = f"message {i} from {'node' if i % 2 == 0 else 'python'}"
        before = now_us(r)
        mid = node.send("order", body) if i % 2 == 0 else rsmq.send_message("order", body)
        after = now_us(r)
        assert ID_RE.fullmatch(mid), mid
        assert before <= id_time_us(mid) <= after, "the id must start with the send time"
        sent.append((mid, body))
    ids = [mid for mid, _ in sent]
    assert sorted(ids) == ids  # ZSET ties fall back to the member: ids must sort by send time

    def receive_with(who: str) -> dict[str, Any] | None:
        return node.receive("order") if who == "node" else as_dict(rsmq.receive_message("order"))

    second_receiver = "python" if first_receiver == "node" else "node"
    first = [receive_with(first_receiver) for _ in sent]
    assert receive_with(first_receiver) is None
    assert [(m["id"], m["message"]) for m in first if m] == sent
    assert all(m is not None and m["rc"] == 1 for m in first)
    assert all(m is not None and m["sent"] == id_time_us(m["id"]) / 1000 for m in first)

    # Visible again, in receive order (= send order), for the other client.
    for mid in ids:
        if first_receiver == "node":
            assert node.call("changeMessageVisibility", qname="order", id=mid, vt=0) == 1
        else:
            assert rsmq.change_message_visibility("order", mid, 0) is True
    second = [receive_with(second_receiver) for _ in sent]
    assert receive_with(second_receiver) is None
    assert second == [{**m, "rc": 2} for m in first if m]  # same id, body, fr and sent


# 5. Receive count and first receive ------------------------------------------------------------


def test_rc_and_fr_node_first_then_python(
    rsmq: Any, node: NodeRSMQ, r: redis.Redis, ns: str
) -> None:
    node.call("createQueue", qname="rcfr")
    mid = rsmq.send_message("rcfr", "hello")
    before = now_ms(r)
    first = node.receive("rcfr", vt=0)
    after = now_ms(r)
    assert first is not None and (first["id"], first["rc"]) == (mid, 1)
    assert before <= first["fr"] <= after

    second = rsmq.receive_message("rcfr", vt=0)
    assert as_dict(second) == {**first, "rc": 2}
    third = node.receive("rcfr")  # the queue's vt: hidden now
    assert third == {**first, "rc": 3}
    assert rsmq.receive_message("rcfr") is None
    assert rsmq.change_message_visibility("rcfr", mid, 0) is True
    fourth = rsmq.receive_message("rcfr")
    assert as_dict(fourth) == {**first, "rc": 4}
    assert r.hget(f"{ns}:rcfr:Q", f"{mid}:rc") == "4"
    assert r.hget(f"{ns}:rcfr:Q", f"{mid}:fr") == str(first["fr"])
    assert rsmq.get_queue_attributes("rcfr").totalrecv == 4


def test_rc_and_fr_python_first_then_node(
    rsmq: Any, node: NodeRSMQ, r: redis.Redis, ns: str
) -> None:
    rsmq.create_queue("rcfr")
    mid = node.send("rcfr", "hello")
    before = now_ms(r)
    first = as_dict(rsmq.receive_message("rcfr"))  # the queue's vt: hidden now
    after = now_ms(r)
    assert first is not None and (first["id"], first["rc"]) == (mid, 1)
    assert before <= first["fr"] <= after
    assert node.receive("rcfr") is None

    assert node.call("changeMessageVisibility", qname="rcfr", id=mid, vt=0) == 1
    second = node.receive("rcfr", vt=0)
    assert second == {**first, "rc": 2}
    third = as_dict(rsmq.receive_message("rcfr", vt=0))
    assert third == {**first, "rc": 3}
    fourth = node.receive("rcfr")
    assert fourth == {**first, "rc": 4}
    assert r.hget(f"{ns}:rcfr:Q", f"{mid}:rc") == "4"
    assert r.hget(f"{ns}:rcfr:Q", f"{mid}:fr") == str(first["fr"])
    assert node.attributes("rcfr")["totalrecv"] == 4


def test_node_pop_and_change_visibility_on_python_messages(
    rsmq: Any, node: NodeRSMQ, r: redis.Redis, ns: str
) -> None:
    rsmq.create_queue("pop")
    a = rsmq.send_message("pop", "a")
    b = rsmq.send_message("pop", "b")
    rsmq.send_message("pop", "c", delay=600)
    assert node.call("changeMessageVisibility", qname="pop", id=b, vt=600) == 1
    received = as_dict(rsmq.receive_message("pop", vt=0))
    assert received is not None and received["id"] == a

    assert node.pop("pop") == {**received, "rc": 2}  # Python's rc and fr, then gone
    assert node.pop("pop") is None  # b hidden by Node, c delayed
    assert rsmq.receive_message("pop") is None
    assert node.call("changeMessageVisibility", qname="pop", id=b, vt=0) == 1
    before = now_ms(r)
    popped = node.pop("pop")
    after = now_ms(r)
    assert popped is not None and (popped["id"], popped["message"], popped["rc"]) == (b, "b", 1)
    assert before <= popped["fr"] <= after and popped["sent"] == id_time_us(b) / 1000

    assert len(message_fields(r, ns, "pop")) == 1  # only c's body is left: no :rc, :fr
    assert node.call("changeMessageVisibility", qname="pop", id=a, vt=0) == 0  # gone
    assert rsmq.delete_message("pop", a) is False
    attributes = attributes_agree(rsmq, node, r, "pop")
    assert (attributes["totalsent"], attributes["totalrecv"], attributes["msgs"]) == (3, 3, 1)


def test_python_pop_and_change_visibility_on_node_messages(
    rsmq: Any, node: NodeRSMQ, r: redis.Redis, ns: str
) -> None:
    node.call("createQueue", qname="pop")
    a = node.send("pop", "a")
    b = node.send("pop", "b")
    node.send("pop", "c", delay=600)
    assert rsmq.change_message_visibility("pop", b, 600) is True
    received = node.receive("pop", vt=0)
    assert received is not None and received["id"] == a

    assert as_dict(rsmq.pop_message("pop")) == {**received, "rc": 2}
    assert rsmq.pop_message("pop") is None  # b hidden by Python, c delayed
    assert node.receive("pop") is None
    assert rsmq.change_message_visibility("pop", b, 0) is True
    before = now_ms(r)
    popped = rsmq.pop_message("pop")
    after = now_ms(r)
    assert popped is not None and (popped.id, popped.message, popped.rc) == (b, "b", 1)
    assert before <= popped.fr <= after and popped.sent == id_time_us(b) / 1000

    assert len(message_fields(r, ns, "pop")) == 1  # only c's body is left: no :rc, :fr
    assert rsmq.change_message_visibility("pop", a, 0) is False  # gone
    assert node.call("deleteMessage", qname="pop", id=a) == 0
    attributes = attributes_agree(rsmq, node, r, "pop")
    assert (attributes["totalsent"], attributes["totalrecv"], attributes["msgs"]) == (3, 3, 1)


# 6. Text ---------------------------------------------------------------------------------------

TEXTS = {
    "empty": "",
    "multibyte": "Grüße, Jürgen! naïve café — 日本語のテキスト, Ελληνικά, עברית, 🎉🚀 𝄞 ✓",
    "nul_astral_combining_rtl": (
        "a\x00b\x00 🧑\u200d🚀 \U0010ffff e\u0301a\u0308 \u202eabc\u202c \u200f\ufeff\u2028"
    ),
    "newlines_quotes": (
        "line one\nline two\r\n\ttabbed \"double\" 'single' `back` \\n not a newline\\ "
        '{"json": ["x", 1]}\n\n'
    ),
}


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_text_round_trips_exactly(
    text: str, rsmq: Any, node: NodeRSMQ, redis_url: str, ns: str
) -> None:
    node.call("createQueue", qname="text")
    from_node = node.send("text", text)
    from_python = rsmq.send_message("text", text)
    with redis.Redis.from_url(redis_url) as raw:  # bytes, not decoded
        stored = raw.hmget(f"{ns}:text:Q", [from_node, from_python])
    assert stored == [text.encode(), text.encode()]  # the same UTF-8 bytes from both

    got_by_python = rsmq.receive_message("text")  # Node's message: it was sent first
    got_by_node = node.receive("text")
    assert got_by_python is not None and got_by_node is not None
    assert (got_by_python.id, got_by_python.message) == (from_node, text)
    assert (got_by_node["id"], got_by_node["message"]) == (from_python, text)


# 7. Dead-lettering and redrive -----------------------------------------------------------------


def test_dead_lettered_and_redriven_messages_are_plain_rsmq_messages(
    rsmq: Any, node: NodeRSMQ, r: redis.Redis, ns: str
) -> None:
    node.call("createQueue", qname="jobs", vt=0)
    node.call("createQueue", qname="jobs-dead")
    mid = node.call("sendMessage", qname="jobs", message="poison")
    got = rsmq.receive_message("jobs")
    dead_id = rsmq.move_message("jobs", mid, "jobs-dead", rc=got.rc)
    assert dead_id is not None and ID_RE.fullmatch(dead_id)
    assert message_fields(r, ns, "jobs") == set()
    from_node = node.receive("jobs-dead")
    assert from_node is not None
    assert (from_node["id"], from_node["message"], from_node["rc"]) == (dead_id, "poison", 1)
    assert node.call("changeMessageVisibility", qname="jobs-dead", id=dead_id, vt=0) == 1

    assert rsmq.redrive_messages("jobs-dead", "jobs") == 1
    back = node.receive("jobs")
    assert back is not None and (back["message"], back["rc"]) == ("poison", 1)
    assert node.call("deleteMessage", qname="jobs", id=back["id"]) == 1
    assert message_fields(r, ns, "jobs") == set()
    assert message_fields(r, ns, "jobs-dead") == set()


# 8. Errors, byte for byte ----------------------------------------------------------------------

# Each bad input as Node RSMQ takes it (op, options) and as our clients take it (a call);
# "q" exists, with maxsize 1024.
BAD_INPUTS: list[tuple[str, dict[str, Any], Callable[[Any], Any]]] = [
    ("createQueue", {"qname": ""}, lambda q: q.create_queue("")),
    ("createQueue", {"qname": "a b"}, lambda q: q.create_queue("a b")),
    ("createQueue", {"qname": "x" * 161}, lambda q: q.create_queue("x" * 161)),
    ("createQueue", {"qname": "n", "vt": "x"}, lambda q: q.create_queue("n", vt="x")),
    ("createQueue", {"qname": "n", "vt": -1}, lambda q: q.create_queue("n", vt=-1)),
    ("createQueue", {"qname": "n", "delay": 10**7}, lambda q: q.create_queue("n", delay=10**7)),
    ("createQueue", {"qname": "n", "delay": "x"}, lambda q: q.create_queue("n", delay="x")),
    ("createQueue", {"qname": "n", "maxsize": 5}, lambda q: q.create_queue("n", maxsize=5)),
    ("createQueue", {"qname": "n", "maxsize": "x"}, lambda q: q.create_queue("n", maxsize="x")),
    ("createQueue", {"qname": "q"}, lambda q: q.create_queue("q")),
    ("getQueueAttributes", {"qname": "nope"}, lambda q: q.get_queue_attributes("nope")),
    ("deleteQueue", {"qname": "nope"}, lambda q: q.delete_queue("nope")),
    ("setQueueAttributes", {"qname": "q"}, lambda q: q.set_queue_attributes("q")),
    (
        "setQueueAttributes",
        {"qname": "q", "maxsize": 70000},
        lambda q: q.set_queue_attributes("q", maxsize=70000),
    ),
    ("sendMessage", {"qname": "q", "message": 5}, lambda q: q.send_message("q", 5)),
    (
        "sendMessage",
        {"qname": "q", "message": "x" * 1025},
        lambda q: q.send_message("q", "x" * 1025),
    ),
    (
        "sendMessage",
        {"qname": "q", "message": "x", "delay": -1},
        lambda q: q.send_message("q", "x", delay=-1),
    ),
    ("sendMessage", {"qname": "nope", "message": "x"}, lambda q: q.send_message("nope", "x")),
    ("receiveMessage", {"qname": "q", "vt": "x"}, lambda q: q.receive_message("q", vt="x")),
    ("receiveMessage", {"qname": "nope"}, lambda q: q.receive_message("nope")),
    ("popMessage", {"qname": "a.b"}, lambda q: q.pop_message("a.b")),
    ("deleteMessage", {"qname": "q", "id": ""}, lambda q: q.delete_message("q", "")),
    ("deleteMessage", {"qname": "q", "id": "short"}, lambda q: q.delete_message("q", "short")),
    (
        "changeMessageVisibility",
        {"qname": "q", "id": "a" * 32, "vt": 10**7},
        lambda q: q.change_message_visibility("q", "a" * 32, 10**7),
    ),
]


@pytest.mark.parametrize(
    ("op", "options", "call"),
    BAD_INPUTS,
    ids=[f"{op}-{i}" for i, (op, _, _) in enumerate(BAD_INPUTS)],
)
def test_error_names_and_messages_are_node_rsmqs_byte_for_byte(
    rsmq: Any, node: NodeRSMQ, op: str, options: dict[str, Any], call: Callable[[Any], Any]
) -> None:
    rsmq.create_queue("q", maxsize=1024)
    # A call that goes to Redis first: RSMQ loads its scripts as it connects, and a client
    # closed before they are loaded fails noisily.
    node.attributes("q")
    with pytest.raises(NodeRSMQError) as from_node:
        node.call(op, **options)
    with pytest.raises(RSMQError) as from_python:
        call(rsmq)
    theirs = (from_node.value.name, from_node.value.message)
    assert (from_python.value.name, str(from_python.value)) == theirs


def test_a_paused_queue_is_an_ordinary_queue_to_node_rsmq(
    rsmq: Any, node: NodeRSMQ, r: redis.Redis, ns: str
) -> None:
    """Pause is for this project's workers only: its mark is a hash field Node RSMQ never
    reads, so Node sends, receives, deletes, changes and lists a paused queue as ever, and
    its deleteQueue takes the mark with the queue."""
    rsmq.create_queue("paused")
    assert rsmq.pause_queue("paused")
    mid = node.send("paused", "from node")
    got = node.receive("paused")
    assert got is not None and (got["id"], got["message"], got["rc"]) == (mid, "from node", 1)
    assert node.call("changeMessageVisibility", qname="paused", id=mid, vt=0) == 1
    peeked = rsmq.peek_messages("paused").messages[0]  # rc and visibility left as node set them
    assert (peeked.id, peeked.rc, peeked.visible) == (mid, 1, True)
    assert node.call("deleteMessage", qname="paused", id=mid) == 1
    attributes = node.call("setQueueAttributes", qname="paused", vt=60)
    assert (attributes["vt"], attributes["msgs"], attributes["totalsent"]) == (60, 0, 1)
    assert "paused" in node.call("listQueues")
    assert rsmq.is_paused("paused")  # through all of that
    assert node.call("deleteQueue", qname="paused") == 1
    assert r.exists(f"{ns}:paused:Q") == 0  # the mark went with the queue


def test_a_queue_with_dedup_is_an_ordinary_queue_to_node_rsmq(
    rsmq: Any, node: NodeRSMQ, r: redis.Redis, ns: str
) -> None:
    """dedup_window is a hash field Node RSMQ never reads and the dedup ids are keys of our
    own: Node sends to, receives and deletes from such a queue, a message sent with a dedup id
    is a plain RSMQ message to it, and its deleteQueue leaves nothing a new queue would see."""
    rsmq.create_queue("dd", dedup_window=120)
    first = rsmq.send_message("dd", "with a dedup id", dedup_id="order-1")
    from_node = node.send("dd", "from node")
    assert rsmq.send_message("dd", "again", dedup_id="order-1") == first
    attributes_agree(rsmq, node, r, "dd")
    got = node.receive("dd")
    assert got is not None and (got["id"], got["message"], got["rc"]) == (
        first,
        "with a dedup id",
        1,
    )
    assert node.call("deleteMessage", qname="dd", id=first) == 1
    # Still a duplicate after Node deleted it: the window, not the message, decides.
    assert rsmq.send_message("dd", "again", dedup_id="order-1") == first
    attributes = node.call("setQueueAttributes", qname="dd", vt=60)
    assert (attributes["vt"], attributes["msgs"], attributes["totalsent"]) == (60, 1, 2)
    assert rsmq.get_queue_attributes("dd").dedup_window == 120  # Node's write kept it
    assert rsmq.receive_message("dd").id == from_node
    node.send("dd", "more")
    assert node.call("deleteQueue", qname="dd") == 1
    # Node's deleteQueue knows nothing of the dedup keys: they are left to expire, and a new
    # queue of the name (created in another second) does not take them for its own.
    assert r.exists(f"{ns}:dd:dedup:order-1") == 1
    deadline = time.monotonic() + 5
    while int(r.time()[0]) == int(r.get(f"{ns}:dd:dedup:order-1").split()[0]):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    rsmq.create_queue("dd")
    assert rsmq.send_message("dd", "new", dedup_id="order-1") != first


def test_a_scheduled_message_is_an_ordinary_message_to_node_rsmq(
    rsmq: Any, node: NodeRSMQ, r: redis.Redis, ns: str
) -> None:
    """A schedule's keys are none of RSMQ's ({ns}:@schedules...): Node's listQueues does not
    see them, and what a tick sends is a plain RSMQ message that Node receives and deletes."""
    node.call("createQueue", qname="sched")
    rsmq.add_schedule("tick", "sched", "from a schedule", every=3600)
    assert node.call("listQueues") == ["sched"]
    s, us = r.time()
    r.zadd(f"{ns}:@schedules:next", {"tick": s * 1000 + us // 1000})  # due now
    (fired,) = rsmq.fire_schedules().fired
    got = node.receive("sched")
    assert got is not None and (got["id"], got["message"], got["rc"]) == (
        fired.id,
        "from a schedule",
        1,
    )
    assert got["sent"] == id_time_us(fired.id) / 1000
    assert node.call("deleteMessage", qname="sched", id=fired.id) == 1
    attributes = node.call("getQueueAttributes", qname="sched")
    assert (attributes["msgs"], attributes["totalsent"], attributes["totalrecv"]) == (0, 1, 1)


def test_a_queue_whose_jobs_kept_results_is_an_ordinary_queue_to_node_rsmq(
    node: NodeRSMQ, r: redis.Redis, ns: str, redis_url: str
) -> None:
    """A result rides in the "done" event, in keys of our own beside the queue's: Node sends
    to the queue a worker kept results of, receives and deletes from it, sees nothing of
    them, and the results stay readable through Node's writes."""
    from realtime import Results
    from support.workers import WorkerProcess

    node.call("createQueue", qname="jobs")
    worker = WorkerProcess(redis_url, ns).start()
    try:
        mid = node.send("jobs", json.dumps({"result": {"total": 42, "html": "<b>"}}))
        with RSMQ.from_url(redis_url, ns=ns) as client:
            results = Results(client)
            done = results.wait_for_result("jobs", mid, timeout=10)
            assert done.result == {"total": 42, "html": "<b>"}
            assert worker.stop() == 0  # so that Node's message stays for Node
            other = node.send("jobs", "from node")
            got = node.receive("jobs")
            assert got is not None and (got["id"], got["message"], got["rc"]) == (
                other,
                "from node",
                1,
            )
            assert node.call("deleteMessage", qname="jobs", id=other) == 1
            attributes = node.call("getQueueAttributes", qname="jobs")
            assert (attributes["msgs"], attributes["totalsent"]) == (0, 2)
            assert results.get_status("jobs", mid).result == {"total": 42, "html": "<b>"}
    finally:
        worker.cleanup()
    assert node.call("deleteQueue", qname="jobs") == 1
    assert r.exists(f"{ns}:jobs", f"{ns}:jobs:Q") == 0


def test_a_queue_with_retention_is_an_ordinary_queue_to_node_rsmq(
    rsmq: Any, node: NodeRSMQ, r: redis.Redis, ns: str
) -> None:
    """retention and totalexpired are hash fields Node RSMQ never reads: Node sends to,
    receives from, changes and deletes such a queue as ever; Node's own receives do not apply
    the retention, but Python's drop Node's messages once expired, and Node's writes keep the
    fields. A queue of the name created after Node's deleteQueue starts clean."""
    rsmq.create_queue("kept", retention=1)
    early = node.send("kept", "from node, received in time")
    got = node.receive("kept")
    assert got is not None and got["id"] == early
    assert node.call("deleteMessage", qname="kept", id=early) == 1
    late = node.send("kept", "from node, left too long")
    attributes_agree(rsmq, node, r, "kept")
    deadline = time.monotonic() + 10
    while now_us(r) < id_time_us(late) + 1_000_000:
        assert time.monotonic() < deadline, "Redis's clock never passed the retention"
        time.sleep(0.01)
    assert rsmq.receive_message("kept") is None  # dropped: past the retention
    attributes = node.call("setQueueAttributes", qname="kept", vt=60)
    assert (attributes["vt"], attributes["msgs"], attributes["totalsent"]) == (60, 0, 2)
    kept = rsmq.get_queue_attributes("kept")
    assert (kept.retention, kept.totalexpired) == (1, 1)  # Node's write kept them
    fresh = node.send("kept", "fresh")
    assert rsmq.receive_message("kept").id == fresh
    assert r.smembers(f"{ns}:kept:expired") == {late}  # for a worker's sweep to announce
    assert node.call("deleteQueue", qname="kept") == 1
    rsmq.create_queue("kept")
    assert rsmq.sweep_expired("kept").ids == []  # not the old queue's expired ids
    assert rsmq.get_queue_attributes("kept").retention == 0
