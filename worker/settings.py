"""The worker's settings, read from the environment once, at start.

A bad value stops the worker before it touches Redis, with a message naming the setting.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from rsmq_core import RSMQError, Schedule, _protocol
from rsmq_core import schedules as _schedules
from rsmq_core.connection import DEFAULT_OPTIONS, ConnectionOptions
from rsmq_core.environment import EnvReader
from rsmq_core.environment import SettingError as SettingError  # raised here, caught by callers

# The example app's handler. Never a default: an installed worker given no HANDLER would
# consume real messages with it, so the Procfile, app.json and scripts/run name it.
EXAMPLE_HANDLER = "worker.example:handle"


# A result rides in every copy of its "done" event: the queue's stream keeps about 10,000 of
# them, and a slow websocket may hold WS_BUFFER in the web process. So no larger than a
# message body may be (RSMQ's maxsize); larger outputs belong in a store of their own.
MAX_RESULT_BYTES = 65_536


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str = "redis://localhost:6379/0"
    redis_cluster: bool = False  # REDIS_URL names a node of a Redis Cluster
    connection: ConnectionOptions = DEFAULT_OPTIONS  # REDIS_TLS_*
    ns: str = "rsmq"
    queues: tuple[str, ...] = ("jobs",)
    handler: str = EXAMPLE_HANDLER  # from_env requires HANDLER
    realtime: bool = True
    poll_interval: float = 1.0
    concurrency: int = 8
    vt: int = 30
    max_receives: int = 5
    shutdown_grace: float = 25.0
    job_timeout: float | None = None  # JOB_TIMEOUT: seconds a handler may run; None: no limit
    retry_backoff: float = 1.0
    retry_backoff_max: int = 3600
    dead_letter_suffix: str = "-dead"
    event_ttl: int = 86_400
    result_max_bytes: int = 16_384  # RESULT_MAX_BYTES: a handler's result, as JSON
    heartbeat: float = 5.0
    stagger: float = 0.004
    log_level: str = "INFO"
    log_format: str = "line"  # LOG_FORMAT: "line" or "json" (rsmq_core.logs)
    metrics_port: int | None = None  # METRICS_PORT: serve this worker's own /metrics there
    schedules: tuple[Schedule, ...] = ()  # SCHEDULES: declared (added or replaced) at start

    def dead_letter_queue(self, qname: str) -> str:
        return qname + self.dead_letter_suffix

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        reader = EnvReader(os.environ if env is None else env)
        d = cls()  # the defaults
        redis_url, connection = reader.redis(d.redis_url)
        settings = cls(
            redis_url=redis_url,
            redis_cluster=reader.boolean("REDIS_CLUSTER", d.redis_cluster),
            connection=connection,
            ns=reader.text("RSMQ_NS", d.ns),
            queues=reader.queue_names("QUEUES", d.queues),
            handler=_handler(reader, "HANDLER"),
            realtime=reader.boolean("REALTIME", d.realtime),
            poll_interval=reader.seconds("POLL_INTERVAL", d.poll_interval, low=0.001),
            concurrency=reader.integer("CONCURRENCY", d.concurrency, low=1, high=10_000),
            vt=reader.integer("VT", d.vt, low=1, high=_protocol.MAX_SECONDS),
            max_receives=reader.integer("MAX_RECEIVES", d.max_receives, low=1),
            shutdown_grace=reader.seconds("SHUTDOWN_GRACE", d.shutdown_grace, low=0),
            job_timeout=reader.limit("JOB_TIMEOUT"),
            retry_backoff=reader.seconds("RETRY_BACKOFF", d.retry_backoff, low=0),
            retry_backoff_max=reader.integer(
                "RETRY_BACKOFF_MAX", d.retry_backoff_max, low=0, high=_protocol.MAX_SECONDS
            ),
            dead_letter_suffix=reader.text("DEAD_LETTER_SUFFIX", d.dead_letter_suffix),
            event_ttl=reader.integer("EVENT_TTL", d.event_ttl, low=1),
            result_max_bytes=reader.integer(
                "RESULT_MAX_BYTES", d.result_max_bytes, low=1, high=MAX_RESULT_BYTES
            ),
            heartbeat=reader.seconds("HEARTBEAT", d.heartbeat, low=0.1),
            stagger=reader.seconds("STAGGER", d.stagger, low=0),
            log_level=reader.log_level("LOG_LEVEL", d.log_level),
            log_format=reader.log_format("LOG_FORMAT", d.log_format),
            metrics_port=reader.integer("METRICS_PORT", 0, low=0, high=65535) or None,
            schedules=_schedules_of(reader, "SCHEDULES"),
        )
        if settings.schedules and settings.redis_cluster:
            raise SettingError(
                "SCHEDULES needs a standalone Redis: on a Redis Cluster (REDIS_CLUSTER) a "
                "schedule and its queue live in different slots"
            )
        for qname in settings.queues:
            dead = settings.dead_letter_queue(qname)
            if not _protocol.QNAME_RE.fullmatch(dead):
                raise SettingError(
                    f"DEAD_LETTER_SUFFIX={settings.dead_letter_suffix!r} makes the dead-letter "
                    f"queue name {dead!r}, which is not a valid queue name "
                    "(letters, digits, _ and -, at most 160 characters)"
                )
        return settings


_SCHEDULE_FIELDS = ("name", "queue", "cron", "every", "message", "catch_up")


def _schedule_entry(where: str, entry: object) -> Schedule:
    if not isinstance(entry, dict):
        raise SettingError(f"{where}: a schedule is a JSON object")
    unknown = sorted(set(entry) - set(_SCHEDULE_FIELDS))
    if unknown:
        raise SettingError(
            f"{where}: unknown field {unknown[0]!r} (a schedule has {', '.join(_SCHEDULE_FIELDS)})"
        )
    for field in ("queue", "message"):
        if field not in entry:
            raise SettingError(f"{where}: no {field!r}")
    cron, every = entry.get("cron"), entry.get("every")
    try:
        queue, _, defn = _schedules.definition(
            entry["queue"], entry["message"], cron, every, entry.get("catch_up", "once")
        )
        # Unnamed: named after its queue and timing, so the same entry declared by every
        # worker (and again after a change of its message) is one schedule, replaced.
        timing = f"every-{defn['every']}" if every is not None else _cron_tag(defn["cron"])
        name = _schedules.check_name(entry.get("name", _default_name(queue, timing)))
    except RSMQError as exc:
        raise SettingError(f"{where}: {exc.explain()}") from None
    return Schedule(
        name, queue, defn["message"], defn.get("cron"), defn.get("every"), defn["catch_up"], None
    )


def _default_name(queue: str, timing: str) -> str:
    name = f"{queue}-{timing}"
    if len(name) > _schedules.MAX_NAME:  # a long queue name: cut, with a hash of all of it
        digest = hashlib.sha256(queue.encode()).hexdigest()[:10]
        name = f"{queue[: _schedules.MAX_NAME - len(timing) - 12]}-{digest}-{timing}"
    return name


def _cron_tag(cron: str) -> str:
    return "cron-" + hashlib.sha256(cron.encode()).hexdigest()[:10]


def _schedules_of(reader: EnvReader, name: str) -> tuple[Schedule, ...]:
    """A JSON list of {"name"?, "queue", "cron" or "every", "message", "catch_up"?}."""
    raw = reader.raw(name)
    if raw is None:
        return ()
    try:
        entries = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise SettingError(f"{name} is not JSON ({exc}): give a list of schedules") from None
    if not isinstance(entries, list):
        raise SettingError(f"{name} must be a JSON list of schedules, not {raw!r}")
    out: dict[str, Schedule] = {}
    for i, entry in enumerate(entries):
        schedule = _schedule_entry(f"{name} entry {i} ({json.dumps(entry)})", entry)
        if schedule.name in out:
            raise SettingError(
                f"{name} entry {i}: a second schedule named {schedule.name!r} "
                '(give each its own "name")'
            )
        out[schedule.name] = schedule
    return tuple(out.values())


def _handler(reader: EnvReader, name: str) -> str:
    raw = reader.raw(name)
    if raw is None:
        raise SettingError(
            f"{name} is not set: set {name}=module:function, the function each message is "
            f"given to ({name}={EXAMPLE_HANDLER} runs the example app's)"
        )
    if not re.fullmatch(r"[\w.]+:[\w.]+", raw):
        raise SettingError(f"{name}={raw!r} must look like 'package.module:function'")
    return raw
