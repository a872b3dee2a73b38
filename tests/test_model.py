"""Random operation sequences against an in-memory model of RSMQ's semantics (hypothesis).

Visibility timeouts and delays are either 0 (visible at once) or an hour (hidden for the whole
run), so the model knows exactly which messages are visible without reading a clock. Retention
likewise: 0 or an hour, and "old" messages are written as another RSMQ client sending two
hours ago would have written them, so the model knows which have expired.
"""

from __future__ import annotations

import asyncio
import secrets
import string
import uuid
from dataclasses import dataclass

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from rsmq_core import RSMQ, AsyncRSMQ, Message, MessageTooLong
from tests.conftest import SyncDriven

HOUR = 3600
MAXSIZE = 1024
seconds = st.sampled_from([0, HOUR])
bodies = st.text(max_size=40) | st.text(min_size=340, max_size=520)  # some over 1024 bytes
# A few dedup ids, so they repeat; the window (300 s) outlasts any run, so none is forgotten.
dedup_ids = st.sampled_from(["a", "b", "c", "order:1", "x/y"])


@dataclass
class Model:
    body: str
    visible: bool
    rc: int = 0
    fr: int | None = None
    old: bool = False  # sent two hours ago: expired whenever the queue's retention is an hour


def old_id(r: redis.Redis) -> tuple[str, int]:
    """An RSMQ id sent two hours ago by Redis's clock, and its sent time in ms."""
    seconds, micros = r.time()
    us = (seconds - 2 * HOUR) * 1_000_000 + micros
    digits, n = "", us
    while n:
        n, d = divmod(n, 36)
        digits = (string.digits + string.ascii_lowercase)[d] + digits
    alphabet = string.ascii_letters + string.digits
    return digits + "".join(secrets.choice(alphabet) for _ in range(22)), us // 1000


def machine(client_factory, redis_url):
    class QueueMachine(RuleBasedStateMachine):
        ids = Bundle("ids")

        def __init__(self) -> None:
            super().__init__()
            self.ns = f"m{uuid.uuid4().hex[:12]}"
            self.q = client_factory(self.ns)
            self.r = redis.Redis.from_url(redis_url, decode_responses=True)
            self.q.create_queue("q", maxsize=MAXSIZE)
            self.retention = 0
            self.expired = 0
            self.unannounced: set[str] = set()  # dropped by receives, for the sweep to hand over
            self.vt = 30
            self.msgs: dict[str, Model] = {}
            self.dedup: dict[str, str] = {}  # dedup id -> the id it was first sent as
            self.sent = self.received = 0

        def teardown(self) -> None:
            self.q.delete_queue("q")
            self.q.close_all()
            self.r.close()

        def _stored(self, mid: str, body: str, delay: int | None, queue_delay: int) -> str:
            visible = (queue_delay if delay is None else delay) == 0
            self.msgs[mid] = Model(body, visible)
            self.sent += 1
            return mid

        @rule(target=ids, body=bodies, delay=st.none() | seconds)
        def send(self, body, delay):
            if len(body.encode()) > MAXSIZE:
                with pytest.raises(MessageTooLong):
                    self.q.send_message("q", body, delay=delay)
                return "z" * 32
            return self._stored(self.q.send_message("q", body, delay=delay), body, delay, 0)

        @rule(body=st.lists(st.text(max_size=10), min_size=1, max_size=5), delay=seconds)
        def send_batch(self, body, delay):
            for mid, b in zip(self.q.send_messages("q", body, delay=delay), body, strict=True):
                self._stored(mid, b, delay, 0)

        @rule(target=ids, body=bodies, delay=st.none() | seconds, dedup_id=dedup_ids)
        def send_dedup(self, body, delay, dedup_id):
            if dedup_id in self.dedup:  # a duplicate: the first id, nothing stored
                assert (
                    self.q.send_message("q", body, delay=delay, dedup_id=dedup_id)
                    == (self.dedup[dedup_id])
                )
                return self.dedup[dedup_id]
            if len(body.encode()) > MAXSIZE:
                with pytest.raises(MessageTooLong):
                    self.q.send_message("q", body, delay=delay, dedup_id=dedup_id)
                return "z" * 32
            mid = self.q.send_message("q", body, delay=delay, dedup_id=dedup_id)
            self.dedup[dedup_id] = mid
            return self._stored(mid, body, delay, 0)

        @rule(
            body=st.lists(st.tuples(st.text(max_size=10), st.none() | dedup_ids), max_size=5),
            delay=seconds,
        )
        def send_batch_dedup(self, body, delay):
            texts, dedup = [b for b, _ in body], [d for _, d in body]
            for mid, b, d in zip(
                self.q.send_messages("q", texts, delay=delay, dedup_ids=dedup),
                texts,
                dedup,
                strict=True,
            ):
                if d is not None and d in self.dedup:
                    assert mid == self.dedup[d]
                    continue
                if d is not None:
                    self.dedup[d] = mid
                self._stored(mid, b, delay, 0)

        def _expired(self, m: Model) -> bool:
            return m.old and self.retention > 0

        def _fresh_visible(self) -> int:
            return sum(m.visible and not self._expired(m) for m in self.msgs.values())

        def _dropped_by_receive(self, got: list[Message], *, took_all_visible: bool) -> None:
            """Which expired messages the receive dropped (it may drop those it met before the
            ones it took): only expired and visible ones, and every such one when it took fewer
            than it asked for."""
            taken = {m.id for m in got}
            for mid, m in list(self.msgs.items()):
                if mid in taken or self.r.hexists(f"{self.ns}:q:Q", mid):
                    assert not (took_all_visible and self._expired(m) and m.visible), mid
                    continue
                assert self._expired(m) and m.visible, f"{mid} dropped before its retention"
                del self.msgs[mid]
                self.expired += 1
                self.unannounced.add(mid)

        @rule(target=ids, body=st.text(max_size=10))
        def send_old(self, body):
            mid, sent = old_id(self.r)
            self.r.hset(f"{self.ns}:q:Q", mid, body)
            self.r.zadd(f"{self.ns}:q", {mid: sent})
            self.r.hincrby(f"{self.ns}:q:Q", "totalsent", 1)
            self.msgs[mid] = Model(body, visible=True, old=True)
            self.sent += 1
            return mid

        @rule(retention=seconds)
        def set_retention(self, retention):
            assert self.q.set_queue_attributes("q", retention=retention).retention == retention
            self.retention = retention

        @rule()
        def sweep(self):
            swept, cursor = [], 0
            while True:
                got = self.q.sweep_expired("q", cursor=cursor)
                swept += got.ids
                if not (cursor := got.cursor):
                    break
            expected = set(self.unannounced)
            for mid, m in list(self.msgs.items()):
                # Only visible ones: one in flight is its worker's until it is handled.
                if self._expired(m) and m.visible:
                    expected.add(mid)
                    del self.msgs[mid]
                    self.expired += 1
            assert sorted(swept) == sorted(expected)
            self.unannounced.clear()

        def _check_received(self, got, vt: int | None, *, pop: bool = False) -> None:
            m = self.msgs[got.id]
            assert m.visible and got.message == m.body
            assert not self._expired(m), "delivered after its retention"
            assert got.rc == m.rc + 1
            if m.fr is not None:
                assert got.fr == m.fr
            m.rc, m.fr = got.rc, got.fr
            m.visible = (self.vt if vt is None else vt) == 0
            self.received += 1
            if pop:
                del self.msgs[got.id]

        @rule(vt=st.none() | seconds)
        def receive(self, vt):
            fresh = self._fresh_visible()
            got = self.q.receive_message("q", vt=vt)
            self._dropped_by_receive([got] if got else [], took_all_visible=got is None)
            if got is None:
                assert fresh == 0
            else:
                self._check_received(got, vt)

        @rule(count=st.integers(1, 5), vt=seconds)
        def receive_batch(self, count, vt):
            visible = self._fresh_visible()
            got = self.q.receive_messages("q", count, vt=vt)
            self._dropped_by_receive(got, took_all_visible=len(got) < count)
            assert len(got) == min(count, visible)
            assert len({m.id for m in got}) == len(got)
            for m in got:
                self._check_received(m, vt)

        @rule()
        def pop(self):
            fresh = self._fresh_visible()
            got = self.q.pop_message("q")
            self._dropped_by_receive([got] if got else [], took_all_visible=got is None)
            if got is None:
                assert fresh == 0
            else:
                self._check_received(got, None, pop=True)

        @rule(mid=consumes(ids))
        def delete(self, mid):
            assert self.q.delete_message("q", mid) is (mid in self.msgs)
            self.msgs.pop(mid, None)

        @rule(mid=ids, vt=seconds)
        def change_visibility(self, mid, vt):
            assert self.q.change_message_visibility("q", mid, vt) is (mid in self.msgs)
            if mid in self.msgs:
                self.msgs[mid].visible = vt == 0

        @rule(vt=seconds)
        def set_vt(self, vt):
            assert self.q.set_queue_attributes("q", vt=vt).vt == vt
            self.vt = vt

        @invariant()
        def attributes_agree(self):
            a = self.q.get_queue_attributes("q")
            assert (a.msgs, a.totalsent, a.totalrecv, a.totalexpired, a.retention) == (
                len(self.msgs),
                self.sent,
                self.received,
                self.expired,
                self.retention,
            )
            hidden = sum(not m.visible for m in self.msgs.values())
            assert hidden <= a.hiddenmsgs <= a.msgs

    return QueueMachine


class _Sync(RSMQ):
    def close_all(self) -> None:
        self.close()


class _Async(SyncDriven):
    def close_all(self) -> None:
        self.aclose()
        self._runner.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_random_operations_match_the_model(redis_url, kind):
    def factory(ns: str):
        if kind == "sync":
            return _Sync.from_url(redis_url, ns=ns)
        return _Async(AsyncRSMQ.from_url(redis_url, ns=ns), asyncio.Runner())

    run_state_machine_as_test(
        machine(factory, redis_url),
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
