"""Random operation sequences against an in-memory model of RSMQ's semantics (hypothesis).

Visibility timeouts and delays are either 0 (visible at once) or an hour (hidden for the whole
run), so the model knows exactly which messages are visible without reading a clock.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import pytest
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

from rsmq_core import RSMQ, AsyncRSMQ, MessageTooLong
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


def machine(client_factory):
    class QueueMachine(RuleBasedStateMachine):
        ids = Bundle("ids")

        def __init__(self) -> None:
            super().__init__()
            self.q = client_factory(f"m{uuid.uuid4().hex[:12]}")
            self.q.create_queue("q", maxsize=MAXSIZE)
            self.vt = 30
            self.msgs: dict[str, Model] = {}
            self.dedup: dict[str, str] = {}  # dedup id -> the id it was first sent as
            self.sent = self.received = 0

        def teardown(self) -> None:
            self.q.delete_queue("q")
            self.q.close_all()

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
                texts, dedup, strict=True,
            ):  # fmt: skip
                if d is not None and d in self.dedup:
                    assert mid == self.dedup[d]
                    continue
                if d is not None:
                    self.dedup[d] = mid
                self._stored(mid, b, delay, 0)

        def _check_received(self, got, vt: int | None, *, pop: bool = False) -> None:
            m = self.msgs[got.id]
            assert m.visible and got.message == m.body
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
            got = self.q.receive_message("q", vt=vt)
            if got is None:
                assert not any(m.visible for m in self.msgs.values())
            else:
                self._check_received(got, vt)

        @rule(count=st.integers(1, 5), vt=seconds)
        def receive_batch(self, count, vt):
            visible = sum(m.visible for m in self.msgs.values())
            got = self.q.receive_messages("q", count, vt=vt)
            assert len(got) == min(count, visible)
            assert len({m.id for m in got}) == len(got)
            for m in got:
                self._check_received(m, vt)

        @rule()
        def pop(self):
            got = self.q.pop_message("q")
            if got is None:
                assert not any(m.visible for m in self.msgs.values())
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
            assert (a.msgs, a.totalsent, a.totalrecv) == (
                len(self.msgs),
                self.sent,
                self.received,
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
        machine(factory),
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
