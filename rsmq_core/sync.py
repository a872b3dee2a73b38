"""RSMQ: the blocking client, a thin facade over the same calls and replies as AsyncRSMQ.

Each method builds its call and parses its reply with ``_protocol``, exactly as AsyncRSMQ
does; only the round trip differs. ``tests/test_api.py`` checks that both expose the same
methods with the same signatures.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from types import TracebackType
from typing import Any, Self, cast

import redis
from redis.cluster import RedisCluster
from redis.retry import Retry

from . import _protocol as p
from . import _replication as replication
from . import schedules as sched
from ._scripts import NAMES, source
from .client import BACKOFF, DEFAULT_URL, RETRIES
from .connection import ConnectionOptions, sync_client
from .errors import RSMQError
from .models import Expired, Firing, Message, Peek, QueueAttributes, Received, Schedule


class RSMQ:
    """An RSMQ client that blocks; see :class:`rsmq_core.AsyncRSMQ` for each method."""

    def __init__(
        self,
        redis: redis.Redis | redis.RedisCluster,
        *,
        ns: str = "rsmq",
        realtime: bool = False,
        min_replicas: int = 0,
        replica_timeout: float = replication.DEFAULT_TIMEOUT,
        _owns_redis: bool = False,
    ) -> None:
        self.redis = redis
        self.ns = p.check_ns(ns)
        self.realtime = realtime
        self.cluster = isinstance(redis, RedisCluster)
        socket_timeout = (
            None if self.cluster else redis.get_connection_kwargs().get("socket_timeout")
        )
        replication.check(
            min_replicas, replica_timeout, cluster=self.cluster, socket_timeout=socket_timeout
        )
        self.min_replicas, self.replica_timeout = min_replicas, replica_timeout
        self._owns_redis = _owns_redis
        self._keys = partial(p.Keys.of, self.ns, cluster=self.cluster)
        self._scripts = {name: redis.register_script(source(name)) for name in NAMES}

    @classmethod
    def from_url(
        cls,
        url: str = DEFAULT_URL,
        *,
        ns: str = "rsmq",
        realtime: bool = False,
        cluster: bool = False,
        connection: ConnectionOptions | None = None,
        min_replicas: int = 0,
        replica_timeout: float = replication.DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> Self:
        timeout = kwargs.get("socket_timeout")
        replication.check(min_replicas, replica_timeout, cluster=cluster, socket_timeout=timeout)
        kwargs.setdefault("retry", Retry(BACKOFF, RETRIES))
        client = sync_client(url, connection, cluster=cluster, **kwargs)
        return cls(
            client,
            ns=ns,
            realtime=realtime,
            min_replicas=min_replicas,
            replica_timeout=replica_timeout,
            _owns_redis=True,
        )

    def __repr__(self) -> str:
        return f"<RSMQ ns={self.ns!r} realtime={self.realtime} cluster={self.cluster}>"

    def keys(self, qname: str) -> p.Keys:
        return self._keys(qname)

    def _call(self, call: p.Call) -> Any:
        return self._scripts[call.script](keys=call.keys, args=call.args)

    def _run(self, steps: p.Steps) -> Any:
        call = steps.send(None)
        try:
            while True:
                try:
                    reply = self._call(call)
                except Exception as exc:
                    call = steps.throw(exc)
                else:
                    call = steps.send(reply)
        except StopIteration as done:
            return done.value

    def create_queue(
        self,
        qname: str,
        *,
        vt: int = p.DEFAULT_VT,
        delay: int = p.DEFAULT_DELAY,
        maxsize: int = p.DEFAULT_MAXSIZE,
        dedup_window: int | None = None,
        retention: int = 0,
    ) -> None:
        self._run(
            p.create_queue_steps(self._keys(qname), vt, delay, maxsize, dedup_window, retention)
        )

    def list_queues(self) -> list[str]:
        return p.parse_queues(self._call(p.list_queues(self.ns)))

    def delete_queue(self, qname: str) -> None:
        self._run(p.delete_queue_steps(self._keys(qname)))

    def get_queue_attributes(self, qname: str) -> QueueAttributes:
        return p.parse_attributes(self._call(p.get_attributes(self._keys(qname))))

    def set_queue_attributes(
        self,
        qname: str,
        *,
        vt: int | None = None,
        delay: int | None = None,
        maxsize: int | None = None,
        dedup_window: int | None = None,
        retention: int | None = None,
    ) -> QueueAttributes:
        call = p.set_attributes(self._keys(qname), vt, delay, maxsize, dedup_window, retention)
        return p.parse_attributes(self._call(call))

    def send_message(
        self, qname: str, message: str, *, delay: int | None = None, dedup_id: str | None = None
    ) -> str:
        keys = self._keys(qname)
        body = p.encode_message(message)
        dedup = None if dedup_id is None else [p.check_dedup_id(dedup_id)]
        call = p.send(
            keys,
            [body],
            p.delay_arg(delay),
            all_or_none=False,
            realtime=self.realtime,
            dedup_ids=dedup,
        )
        reply, acked = self._send_call(call)
        if acked is None:
            return p.first_id(reply)
        (result,) = replication.confirm(
            p.parse_ids(reply), acked, self.min_replicas, self.replica_timeout
        )
        if isinstance(result, RSMQError):
            raise result
        return result

    def send_messages(
        self,
        qname: str,
        messages: Sequence[str],
        *,
        delay: int | None = None,
        dedup_ids: Sequence[str | None] | None = None,
    ) -> list[str]:
        keys = self._keys(qname)
        call = p.send_batch(keys, messages, delay, realtime=self.realtime, dedup_ids=dedup_ids)
        reply, acked = self._send_call(call)
        ids = p.parse_batch_ids(reply)
        if acked is None:
            return ids
        return replication.confirm_all(ids, acked, self.min_replicas, self.replica_timeout)

    def receive_message(self, qname: str, *, vt: int | None = None) -> Message | None:
        return next(iter(self._receive(qname, 1, vt, pop=False)), None)

    def receive_messages(self, qname: str, count: int, *, vt: int | None = None) -> list[Message]:
        return self._receive(qname, p.check_count(count), vt, pop=False)

    def receive_batch(
        self, qname: str, count: int, *, vt: int | None = None, announce: str | None = None
    ) -> Received:
        keys = self._keys(qname)
        call = p.receive(keys, p.check_count(count), p.vt_arg(vt), pop=False, announce=announce)
        return p.parse_received(self._call(call))

    def pop_message(self, qname: str) -> Message | None:
        return next(iter(self._receive(qname, 1, None, pop=True)), None)

    def pop_messages(self, qname: str, count: int) -> list[Message]:
        return self._receive(qname, p.check_count(count), None, pop=True)

    def delete_message(self, qname: str, id: str, *, rc: int | None = None) -> bool:
        keys = self._keys(qname)
        return p.parse_flags(self._call(p.delete(keys, [p.fenced(id, rc)])))[0]

    def delete_messages(self, qname: str, ids: Sequence[str]) -> int:
        keys = self._keys(qname)
        return p.parse_count(self._call(p.delete_all(keys, p.check_ids(ids))))

    def change_message_visibility(
        self, qname: str, id: str, vt: int, *, rc: int | None = None
    ) -> bool:
        return p.parse_flags(self._call(p.change_visibility(self._keys(qname), id, vt, rc)))[0]

    def next_visible_in(self, qname: str) -> float | None:
        return p.parse_next_visible(self._call(p.next_visible(self._keys(qname))))

    def move_message(
        self, qname: str, id: str, to_qname: str, *, rc: int | None = None
    ) -> str | None:
        src, dst = self._keys(qname), self._keys(to_qname)
        steps = p.move_steps(src, dst, [p.fenced(id, rc)], realtime=self.realtime)
        moved: list[str] = self._run(steps)
        return moved[0] or None

    def redrive_messages(self, qname: str, to_qname: str, *, count: int = 1000) -> int:
        src, dst = self._keys(qname), self._keys(to_qname)
        return len(self._run(p.redrive_steps(src, dst, count, realtime=self.realtime)))

    def notify(self, qname: str) -> int:
        return int(self._call(p.notify(self._keys(qname))))

    def purge_queue(self, qname: str) -> int:
        return int(p.check_status(self._call(p.purge(self._keys(qname))))[1])

    def peek_messages(self, qname: str, *, offset: int = 0, count: int = 50) -> Peek:
        return p.parse_peek(self._call(p.peek(self._keys(qname), offset, count)), offset)

    def sweep_expired(self, qname: str, *, cursor: int = 0, count: int = 1000) -> Expired:
        return p.parse_expired(self._call(p.expire(self._keys(qname), cursor, count)))

    def make_visible(self, qname: str, id: str) -> bool:
        return p.parse_flags(self._call(p.make_visible(self._keys(qname), id)))[0]

    def move_messages(self, qname: str, ids: Sequence[str], to_qname: str) -> list[str]:
        src, dst = self._keys(qname), self._keys(to_qname)
        moved: list[str] = self._run(p.move_selected_steps(src, dst, ids, realtime=self.realtime))
        return moved

    def pause_queue(self, qname: str) -> bool:
        return p.parse_flags(self._call(p.pause(self._keys(qname), True)))[0]

    def resume_queue(self, qname: str) -> bool:
        return p.parse_flags(self._call(p.pause(self._keys(qname), False)))[0]

    def is_paused(self, qname: str) -> bool:
        return bool(self.redis.hexists(self._keys(qname).hash, p.PAUSED_FIELD))

    def add_schedule(
        self,
        name: str,
        qname: str,
        message: str,
        *,
        cron: str | None = None,
        every: int | None = None,
        catch_up: str = "once",
    ) -> Schedule:
        steps = sched.add_steps(self.ns, self.cluster, name, qname, message, cron, every, catch_up)
        return cast(Schedule, self._run(steps))

    def list_schedules(self) -> list[Schedule]:
        return sched.parse_list(self._call(sched.list_call(self.ns, self.cluster)))

    def remove_schedule(self, name: str) -> bool:
        call = sched.remove(self.ns, self.cluster, name)
        return bool(int(p.check_status(self._call(call))[1]))

    def fire_schedules(self) -> Firing:
        return cast(Firing, self._run(sched.fire_steps(self.ns, self.cluster)))

    def close(self) -> None:
        if self._owns_redis:
            self.redis.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send_call(self, call: p.Call) -> tuple[Any, int | None]:
        if not self.min_replicas:
            return self._call(call), None
        script = self._scripts[call.script]
        commands = replication.commands(script.sha, call, self.min_replicas, self.replica_timeout)
        for _ in range(2):
            pipe = self.redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            settled = replication.settle(pipe.execute(raise_on_error=False))
            if settled is not None:
                return settled
            self.redis.script_load(script.script)
        raise replication.not_loaded(call.script)

    def _receive(self, qname: str, count: int, vt: int | None, *, pop: bool) -> list[Message]:
        call = p.receive(self._keys(qname), count, p.vt_arg(vt), pop=pop)
        return p.parse_messages(self._call(call))
