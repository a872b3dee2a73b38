"""Keys, validation, message ids and reply parsing: everything but I/O.

Both clients build a script call here, make the one round trip, and parse the reply here, so
the async core and the sync facade cannot drift apart.
"""

from __future__ import annotations

import os
import re
import string
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from redis.exceptions import RedisError

from .errors import (
    ERRORS_BY_NAME,
    IndexConflict,
    InvalidFormat,
    InvalidValue,
    MessageNotString,
    MissingParameter,
    NoAttributeSupplied,
    QueueNotFound,
    RSMQError,
)
from .models import Expired, Message, Peek, PeekedMessage, QueueAttributes, Received

QNAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,160}")
ID_RE = re.compile(r"[a-zA-Z0-9:]{32}")
MAX_SECONDS = 9_999_999
MAXSIZE_MIN, MAXSIZE_MAX, MAXSIZE_UNLIMITED = 1024, 65536, -1
DEFAULT_VT, DEFAULT_DELAY, DEFAULT_MAXSIZE = 30, 0, 65536
# One script call never holds Redis for long, however much callers ask for at once.
MAX_BATCH = 1000

_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True, eq=False)
class Keys:
    """The Redis names of one queue in one namespace.

    On a standalone Redis they are RSMQ's own (``{ns}:{qname}``, ``{ns}:{qname}:Q``,
    ``{ns}:QUEUES``, channel ``{ns}:rt:{qname}``). On a cluster the queue name is hash-tagged
    (``{ns}:{{qname}}``, ...): one queue's keys and channels share a slot, different queues
    spread over the masters, and ``{ns}:QUEUES`` sits in a slot of its own, so no script
    touches it (see :func:`create_queue_steps`). Extras of a queue go under ``zset + ":..."``
    and ``channel + ":..."``, which keeps them in the queue's slot.

    Extras that belong to the queue (realtime's status events: :attr:`events` and
    :meth:`status`) are named here, as :meth:`AsyncRSMQ.delete_queue` deletes them with it.

    Compared and hashed by identity: there is one per queue (Keys.of caches them), and the
    batchers hash them on every call.
    """

    zset: str
    hash: str
    queues: str
    channel: str
    qname: str
    cluster: bool

    @property
    def pause_channel(self) -> str:
        """Where pause_queue and resume_queue say "1" (paused) or "0" (resumed)."""
        return f"{self.channel}:paused"

    @property
    def events(self) -> str:
        """The queue's stream of status events."""
        return f"{self.zset}:events"

    def dedup(self, dedup_id: str) -> str:
        """The message id a dedup id was first sent as (after the queue's created time), kept
        for the queue's dedup window."""
        return f"{self.zset}:dedup:{dedup_id}"

    def sent(self, span: int) -> str:
        """The hash of the retry markers of the queue's sends of one RETRY_SPAN (send.lua)."""
        return f"{self.zset}:sent:{span}"

    @property
    def expired(self) -> str:
        """The set of ids of expired messages receives dropped, still to be announced."""
        return f"{self.zset}:expired"

    @property
    def dedups(self) -> str:
        """A SCAN pattern matching every :meth:`dedup` key of the queue."""
        return _glob_escape(self.dedup("")) + "*"

    @property
    def dedup_sweep(self) -> str:
        """Set while a deleted queue's dedup keys are still to be swept."""
        return f"{self.zset}:dedup-sweep"

    def status(self, id: str) -> str:
        """The last status of one message of the queue."""
        return f"{self.zset}:status:{id}"

    @property
    def statuses(self) -> str:
        """A SCAN pattern matching every :meth:`status` key of the queue, and only those."""
        return _glob_escape(self.status("")) + "?" * 32

    def notify(self, channel: str) -> str:
        """A channel of this queue as the scripts take it, marked with how to publish on it:
        "P" for PUBLISH, "S" on a cluster for SPUBLISH (sharded pub/sub, the channel being in
        the queue's slot)."""
        return f"S{channel}" if self.cluster else f"P{channel}"

    @classmethod
    def of(cls, ns: str, qname: object, cluster: bool = False) -> Keys:
        if type(qname) is str:
            return _keys(ns, qname, cluster)
        # A str subclass (a StrEnum) is checked, then used as the plain str it holds.
        return _keys(ns, str.__str__(check_qname(qname)), cluster)


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis MATCH pattern (a namespace may hold ``*?[]``)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


@lru_cache(maxsize=4096)
def _keys(ns: str, qname: str, cluster: bool) -> Keys:
    # Cached: checking the name and building the strings would otherwise cost every call.
    name = check_qname(qname)
    tag = f"{{{name}}}" if cluster else name
    return Keys(f"{ns}:{tag}", f"{ns}:{tag}:Q", f"{ns}:QUEUES", f"{ns}:rt:{tag}", name, cluster)


def _is_utf8(text: str) -> bool:
    """Whether ``text`` can go to Redis: lone surrogates have no UTF-8 form."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_ns(ns: object) -> str:
    if not isinstance(ns, str) or not ns or not _is_utf8(ns):
        raise InvalidFormat(
            "Invalid ns format",
            detail=f"a namespace is a non-empty string of valid Unicode (got {ns!r})",
        )
    return ns


# Queue names RSMQ accepts but whose keys would be a key of the layout: the queue "QUEUES"
# has its messages at {ns}:QUEUES, the index of every queue's name (on a cluster its key is
# {ns}:{QUEUES}, but a name valid on one layout and not the other would make moving between
# them fail late). No other name can collide: names have no ":", so {ns}:{qname} is never
# another queue's key nor one of ours ({ns}:{qname}:..., {ns}:@...), and {ns}:{qname}:Q ends
# in "Q" after a ":", which no other key of the namespace does.
RESERVED_QNAMES = {
    "QUEUES": "its messages would be stored at {ns}:QUEUES, the key of the index of queue names"
}


def check_qname(qname: object) -> str:
    if qname is None or qname == "":
        raise MissingParameter("No qname supplied")
    if not isinstance(qname, str) or not QNAME_RE.fullmatch(qname):
        raise InvalidFormat(
            "Invalid qname format",
            detail=f"a queue name is 1 to 160 of a-z, A-Z, 0-9, _ and - (got {qname!r})",
        )
    if qname in RESERVED_QNAMES:
        raise InvalidFormat(
            "Invalid qname format", detail=f"{qname!r} is reserved: {RESERVED_QNAMES[qname]}"
        )
    return qname


def check_id(id: object) -> str:
    if id is None or id == "":
        raise MissingParameter("No id supplied")
    if not isinstance(id, str) or not ID_RE.fullmatch(id):
        raise InvalidFormat(
            "Invalid id format", detail=f"a message id is 32 of a-z, A-Z, 0-9 and : (got {id!r})"
        )
    return id


def _check_int(name: str, value: object, low: int, high: int, *also: int) -> int:
    """An int in low..high (or one of ``also``), else RSMQ's "<name> must be between <low> and
    <high>" with what was refused in the detail."""
    text = f"{name} must be between {low} and {high}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(text, detail=f"got {value!r}, not an integer")
    if not low <= value <= high and value not in also:
        raise InvalidValue(text, detail=f"got {value}")
    # A plain int: redis-py writes an int subclass (an IntEnum) as its repr, not its digits.
    return int(value)


def check_seconds(name: str, value: object) -> int:
    """vt and delay: whole seconds in 0..9999999, as RSMQ allows."""
    return _check_int(name, value, 0, MAX_SECONDS)


def check_maxsize(value: object) -> int:
    return _check_int("maxsize", value, MAXSIZE_MIN, MAXSIZE_MAX, MAXSIZE_UNLIMITED)


def check_count(value: object) -> int:
    return _check_int("count", value, 1, MAX_BATCH)


# Idempotent sends. SQS's window, and its id's length; the characters are those a header, a
# URL and a Redis key carry as they are (no glob character, nothing a shell quotes).
DEFAULT_DEDUP_WINDOW, MAX_DEDUP_WINDOW = 300, 86_400
DEDUP_ID_RE = re.compile(r"[a-zA-Z0-9_.:/=+@-]{1,128}")


def check_dedup_window(value: object) -> int:
    return _check_int("dedup_window", value, 1, MAX_DEDUP_WINDOW)


RETENTION_FIELD = "retention"  # the queue hash's field (RETENTION in _lib.lua)


def check_retention(value: object) -> int:
    """Retention: whole seconds in 0..9999999 (0 keeps messages forever)."""
    return _check_int("retention", value, 0, MAX_SECONDS)


def check_dedup_id(dedup_id: object) -> str:
    if isinstance(dedup_id, str) and DEDUP_ID_RE.fullmatch(dedup_id):
        return dedup_id
    if not isinstance(dedup_id, str):
        got = f"got {type(dedup_id).__name__}"
    elif not dedup_id or len(dedup_id) > 128:
        got = f"got {len(dedup_id)} characters"
    else:
        bad = next(c for c in dedup_id if not DEDUP_ID_RE.fullmatch(c))
        got = f"got {bad!r} at index {dedup_id.index(bad)}"
    raise InvalidFormat(
        "Invalid dedup_id format",
        detail=f"a dedup id is 1 to 128 of a-z, A-Z, 0-9 and _ . : / = + @ - ({got})",
    )


def check_dedup_ids(dedup_ids: object, n: int) -> list[str] | None:
    """A dedup id (or None) per message of a batch; None when none has one."""
    if dedup_ids is None:
        return None
    if isinstance(dedup_ids, str | bytes) or not isinstance(dedup_ids, Sequence):
        raise InvalidValue(
            "dedup_ids must be a list of dedup ids", detail=f"got {type(dedup_ids).__name__}"
        )
    if len(dedup_ids) != n:
        raise InvalidValue(
            "dedup_ids must have one item per message",
            detail=f"got {len(dedup_ids)} for {n} messages",
        )
    return ["" if d is None else check_dedup_id(d) for d in dedup_ids]


def encode_message(message: object) -> bytes:
    """The body as UTF-8: the unit a queue's maxsize is measured in."""
    if not isinstance(message, str):
        raise MessageNotString(detail=f"got {type(message).__name__}")
    try:
        return message.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MessageNotString(
            detail=f"it is not valid Unicode: a lone surrogate at index {exc.start}"
        ) from None


# Random bytes below 248 map onto the 62 id characters evenly (248 = 4 * 62); the rest
# are dropped, so every character is equally likely.
_TO_ID_CHAR = bytes(_ID_ALPHABET.encode()[b % 62] for b in range(248)) + bytes(8)
_DROP = bytes(range(248, 256))


def new_id_suffixes(n: int) -> bytes:
    """The random 22 characters of ``n`` message ids, joined; the script prepends the time.

    From os.urandom, which is safe across fork: forked workers never repeat each other.
    """
    need = 22 * n
    out = b""
    while len(out) < need:
        out += os.urandom(need - len(out) + need // 16 + 8).translate(_TO_ID_CHAR, _DROP)
    return out[:need]


def sent_ms(id: str) -> float:
    """When a message was sent, read back from its id (epoch ms, as RSMQ reports it)."""
    return int(id[:10], 36) / 1000


# Replies ---------------------------------------------------------------------------------------
# Scripts answer with a table whose first element is "ok" or an RSMQ error name.


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        # surrogateescape: a body written by another client that is not UTF-8 still round-trips.
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def check_status(reply: Sequence[Any]) -> Sequence[Any]:
    status = _text(reply[0])
    if status != "ok":
        cls = ERRORS_BY_NAME.get(status, RSMQError)
        if cls is IndexConflict:
            raise index_conflict(_text(reply[1]), _text(reply[2]))
        # A batch refused whole says which of its messages was refused.
        detail = f"at index {int(reply[1])} of the batch" if len(reply) > 1 else None
        raise cls(detail=detail)
    return reply


def index_conflict(key: str, kind: str) -> IndexConflict:
    return IndexConflict(
        f"{key} is a {kind}, not the set of queue names RSMQ keeps there",
        detail="another program wrote it; nothing here changes or deletes it: "
        "rename or remove it yourself",
    )


def error_from_name(name: str, message: str | None = None) -> RSMQError:
    cls = ERRORS_BY_NAME.get(name, RSMQError)
    return cls(message)


def parse_ids(reply: Sequence[Any]) -> list[str | RSMQError]:
    """Send replies: one id per message, or "!<errorName>" for a message refused ("=<id>" for
    a duplicate is its id)."""
    out: list[str | RSMQError] = []
    for item in check_status(reply)[1:]:
        text = _text(item)
        if text.startswith("!"):
            out.append(error_from_name(text[1:]))
        else:
            out.append(text.removeprefix("="))
    return out


def parse_sent(reply: Sequence[Any]) -> list[tuple[str, bool]]:
    """An all-or-none send's reply: each message's id, and whether it was a duplicate (of a
    message sent before with its dedup id, which stored nothing)."""
    out = []
    for item in check_status(reply)[1:]:
        text = _text(item)
        out.append((text.removeprefix("="), text.startswith("=")))
    return out


def first_id(reply: Sequence[Any]) -> str:
    """The reply to a one-message send: its id, or the error that refused it."""
    (result,) = parse_ids(reply)
    if isinstance(result, RSMQError):
        raise result
    return result


def parse_batch_ids(reply: Sequence[Any]) -> list[str]:
    """Send replies of an all-or-none batch: refused whole, or every id."""
    return [_text(item).removeprefix("=") for item in check_status(reply)[1:]]


def parse_wait(reply: Sequence[Any]) -> float | None:
    """From a receive's reply: seconds until the next message is visible (0.0 when the
    receive took all it asked for, so there may be more), or None if the queue is empty."""
    wait = _text(check_status(reply)[1])
    if wait == "":
        return 0.0
    return None if int(wait) < 0 else int(wait) / 1000


# Message is frozen, so its __init__ sets each field through object.__setattr__; setting the
# slots directly builds one in half the time, and a batch receive builds a thousand at once.
_new_object = object.__new__
_SET_ID, _SET_BODY, _SET_RC, _SET_FR, _SET_SENT = (
    Message.__dict__[name].__set__ for name in ("id", "message", "rc", "fr", "sent")
)


def parse_messages(reply: Sequence[Any]) -> list[Message]:
    """Receive replies: {"ok", wait, now, counts, deleted, id, body, id, body...}; ``counts``
    is empty when every message is received for the first time (rc 1, fr now), else
    "rc,fr,..."; ``deleted`` is read by :func:`parse_deleted`."""
    flat = check_status(reply)[5:]
    ids, bodies = flat[0::2], flat[1::2]
    if ids and isinstance(ids[0], bytes):  # unless the redis client decodes replies itself
        # surrogateescape: a body written by another client that is not UTF-8 still round-trips.
        ids = [x.decode("utf-8", "surrogateescape") for x in ids]
        bodies = [x.decode("utf-8", "surrogateescape") for x in bodies]
    counts = _text(reply[3])
    if counts:
        values = [int(x) for x in counts.split(",")]
        rcs, frs = values[0::2], values[1::2]
    else:
        rcs, frs = [1] * len(ids), [int(reply[2])] * len(ids)
    out = []
    for mid, body, rc, fr in zip(ids, bodies, rcs, frs, strict=True):
        m = _new_object(Message)
        _SET_ID(m, mid)
        _SET_BODY(m, body)
        _SET_RC(m, rc)
        _SET_FR(m, fr)
        _SET_SENT(m, sent_ms(mid))
        out.append(m)
    return out


def parse_received(reply: Sequence[Any]) -> Received:
    return Received(parse_messages(reply), parse_wait(reply))


def parse_deleted(reply: Sequence[Any]) -> list[bool]:
    """From a receive's reply, whether each message it was asked to delete first was there."""
    return [flag == "1" for flag in _text(check_status(reply)[4])]


def parse_flags(reply: Sequence[Any]) -> list[bool]:
    return [int(x) == 1 for x in check_status(reply)[1:]]


ATTRIBUTE_FIELDS = ("vt", "delay", "maxsize", "totalrecv", "totalsent", "created", "modified")


def parse_attributes(reply: Sequence[Any]) -> QueueAttributes:
    values = [int(x) if x is not None else 0 for x in check_status(reply)[1:]]
    return QueueAttributes(*values)


def parse_queues(reply: Sequence[Any]) -> list[str]:
    return sorted(_text(x) for x in check_status(reply)[1:])


# Calls -----------------------------------------------------------------------------------------
# What each operation asks of Redis: a script name, its KEYS and its ARGV.


@dataclass(frozen=True, slots=True)
class Call:
    script: str
    keys: Sequence[str | bytes]
    args: list[str | int | bytes]


def delay_arg(delay: object) -> str | int:
    return "" if delay is None else check_seconds("delay", delay)


Steps = Generator[Call, Any, Any]
"""An operation of more than one call (only on a cluster): yields each call, gets its reply,
returns the result. Both clients drive it, so the steps are written once."""


def _index(k: Keys, change: str) -> Call:
    return Call("index", [k.queues], [change, k.qname])


def list_queues(ns: str) -> Call:
    return Call("index", [f"{ns}:QUEUES"], ["list", ""])


def create_queue_steps(
    k: Keys,
    vt: object,
    delay: object,
    maxsize: object,
    dedup_window: object = None,
    retention: object = 0,
) -> Steps:
    kept = check_retention(retention)
    args: list[str | int | bytes] = [
        check_seconds("vt", vt),
        check_seconds("delay", delay),
        check_maxsize(maxsize),
        k.qname,
        "" if dedup_window is None else check_dedup_window(dedup_window),
        kept or "",  # 0 is RSMQ's way, and stored as RSMQ stores it: not at all
    ]
    if not k.cluster:
        check_status((yield Call("create_queue", [k.hash, k.expired, k.queues], args)))
        return
    # On a cluster the index is another slot: checked first (a key of someone else's there
    # fails the create before anything is written), named after the queue exists, and named
    # again when it exists already, which repairs an index an interrupted create left behind.
    check_status((yield _index(k, "check")))
    reply = yield Call("create_queue", [k.hash, k.expired], args)
    check_status((yield _index(k, "add")))
    check_status(reply)


# Status keys swept per call: one SCAN of this COUNT holds Redis about a millisecond.
SWEEP_COUNT = 1000


def delete_queue_steps(k: Keys) -> Steps:
    """Delete the queue's keys, its events stream and its statuses. A queue that is not there
    still has leftovers of an interrupted delete swept before QueueNotFound is raised.

    Once the queue is deleted, a sweep that fails (Redis gone, a user not allowed SCAN) does
    not fail the call: what was asked is done, the statuses expire on their own, and the
    stream, left in place, has the next delete_queue of that name sweep again."""
    now = retry_span()
    # The spans a marker hash of the queue may still live in (90 s after its last send), and
    # the next, for a client whose clock runs ahead; a clock further off leaves a hash to expire.
    sent = [k.sent(span) for span in range(now - 3, now + 2)]
    keys = [k.hash, k.zset, k.events, k.dedup_sweep, k.expired, *sent]
    if not k.cluster:
        reply = yield Call("delete_queue", [*keys, k.queues], [k.qname, len(sent)])
    else:
        check_status((yield _index(k, "check")))
        reply = yield Call("delete_queue", keys, [k.qname, len(sent)])
        check_status((yield _index(k, "remove")))
    if _text(reply[0]) == "indexConflict":
        check_status(reply)
    sweeps = [(k.events, k.statuses), (k.dedup_sweep, k.dedups)]
    try:
        for due, (last, pattern) in zip(reply[1:3], sweeps, strict=True):
            cursor = "0" if int(due) else ""
            while cursor:
                swept = yield Call("sweep", [last], [cursor, pattern, SWEEP_COUNT])
                cursor = "" if _text(swept[1]) == "0" else _text(swept[1])
    except RedisError:
        pass
    check_status(reply[:1])


def get_attributes(k: Keys) -> Call:
    return Call("get_attributes", [k.hash, k.zset], [])


def set_attributes(
    k: Keys,
    vt: object,
    delay: object,
    maxsize: object,
    dedup_window: object = None,
    retention: object = None,
) -> Call:
    given = (vt, delay, maxsize, dedup_window, retention)
    if all(value is None for value in given):
        raise NoAttributeSupplied()
    args: list[str | int | bytes] = [
        "" if vt is None else check_seconds("vt", vt),
        "" if delay is None else check_seconds("delay", delay),
        "" if maxsize is None else check_maxsize(maxsize),
        "" if dedup_window is None else check_dedup_window(dedup_window),
        "" if retention is None else check_retention(retention),
    ]
    return Call("set_attributes", [k.hash, k.zset], args)


def send_batch(
    k: Keys,
    messages: object,
    delay: object,
    *,
    realtime: bool,
    dedup_ids: object,
    events: SendEvents | None = None,
) -> Call:
    """A batch send, all or none, checked: the one call both clients' batch sends build."""
    bodies = [encode_message(m) for m in check_messages(messages)]
    return send(
        k,
        bodies,
        delay_arg(delay),
        all_or_none=True,
        realtime=realtime,
        dedup_ids=check_dedup_ids(dedup_ids, len(bodies)),
        events=events,
    )


@dataclass(frozen=True, slots=True)
class SendEvents:
    """What a send records of each message it stores, in its own script call, before it
    wakes the queue's workers (send.lua): the status event ``head + id + tail`` (JSON
    without its closing brace: the script adds Redis's clock as "ts") appended to the queue's
    event stream (capped at about ``maxlen``), kept ``ttl`` seconds as the message's last
    status, and published on ``channel`` (marked, as :meth:`Keys.notify` marks). What the
    events say is realtime's business: rsmq_core writes what it is given."""

    head: str
    tail: str
    channel: str
    maxlen: int
    ttl: int


def send(
    keys: Keys,
    bodies: Sequence[bytes],
    delay: str | int,
    *,
    all_or_none: bool,
    realtime: bool,
    dedup_ids: Sequence[str] | None = None,
    events: SendEvents | None = None,
) -> Call:
    """``dedup_ids``: checked ones (see :func:`check_dedup_ids`), "" for a message without.
    Every call leaves a retry marker (see send.lua), so redis-py's retry of it after a lost
    reply stores nothing twice: in the hash of the client's current RETRY_SPAN, named here so
    that a retry, the same call, names the same hash. ``events``: recorded, and the workers
    woken, in the same call (``realtime`` is then beside the point)."""
    zset, hash, sent, channel = _send_names(keys, retry_span())
    one = len(bodies) == 1
    args: list[str | int | bytes] = [
        channel if realtime else b"",
        b"all" if all_or_none else b"each",
        delay,
        new_id_suffixes(len(bodies)),
        b"%d" % len(bodies[0]) if one else ",".join(str(len(b)) for b in bodies),
        bodies[0] if one else b"".join(bodies),
    ]
    names: list[str | bytes] = [zset, hash, sent]
    if events is not None:
        names.append(keys.events)
        args += [
            "".join("d" if d else "-" for d in dedup_ids or ()),
            events.channel,
            keys.notify(keys.channel),
            events.maxlen,
            events.ttl,
            keys.status(""),
            events.head,
            events.tail,
        ]
    elif dedup_ids:
        args.append("".join("d" if d else "-" for d in dedup_ids))
    if dedup_ids:
        names += [keys.dedup(d) for d in dedup_ids if d]
    return Call("send", names, args)


@lru_cache(maxsize=1024)
def _send_names(keys: Keys, span: int) -> tuple[bytes, bytes, bytes, bytes]:
    """A send's keys and realtime channel, encoded once per queue and span: redis-py encodes
    every str argument at every call, which cost the plain send more than its marker's key
    (bytes it passes as they are)."""
    channel = keys.notify(keys.channel)
    return (keys.zset.encode(), keys.hash.encode(), keys.sent(span).encode(), channel.encode())


# Sends' retry markers go in one hash per queue per span of this many seconds (RETRY_SPAN in
# _lib.lua). Spans are counted by the client's clock: only the name of a hash depends on it,
# never what a marker means (a retry carries the name its first try used).
RETRY_SPAN = 30


def retry_span() -> int:
    return int(time.time()) // RETRY_SPAN


Fenced = tuple[str, str | int]  # a message id and the receive count it must have, or ""


def _joined(items: Sequence[Fenced]) -> list[str | int | bytes]:
    """The ids and fences of a fenced delete, as the scripts take them: two arguments."""
    ids = "".join(id for id, _ in items)  # every id is 32 characters
    return [ids, ",".join(str(rc) for _, rc in items)]


def vt_arg(vt: object) -> str | int:
    return "" if vt is None else check_seconds("vt", vt)


def receive(
    keys: Keys,
    count: int,
    vt: str | int,
    *,
    pop: bool,
    announce: object = None,
    deletes: Sequence[Fenced] = (),
) -> Call:
    """Receive (or pop) up to ``count`` messages, after deleting ``deletes`` in the same
    step (answered by :func:`parse_deleted`)."""
    if announce is not None and (
        not isinstance(announce, str) or not announce or not _is_utf8(announce)
    ):
        raise InvalidValue("announce must be a channel name", detail=f"got {announce!r}")
    args: list[str | int | bytes] = [vt, count, "pop" if pop else "", announce or ""]
    if announce:
        args[3] = keys.notify(announce)
    if deletes:
        args += _joined(deletes)
    return Call("receive", [keys.zset, keys.hash, keys.expired], args)


def fenced(id: object, rc: object) -> Fenced:
    if rc is None:
        return (check_id(id), "")
    if isinstance(rc, bool) or not isinstance(rc, int) or rc < 1:
        raise InvalidValue("rc must be a receive count of 1 or more", detail=f"got {rc!r}")
    return (check_id(id), int(rc))


def delete(keys: Keys, items: Sequence[Fenced]) -> Call:
    """Delete, answering 1 or 0 per id (see parse_flags)."""
    return Call("delete", [keys.zset, keys.hash], [*_joined(items), ""])


def delete_all(keys: Keys, ids: Sequence[str]) -> Call:
    """Delete unfenced, answering only how many were deleted (see parse_count): the script
    then reads nothing per id."""
    return Call("delete", [keys.zset, keys.hash], ["".join(ids), "", "count"])


def parse_count(reply: Sequence[Any]) -> int:
    return int(check_status(reply)[1])


def change_visibility(k: Keys, id: object, vt: object, rc: object) -> Call:
    mid, fence = fenced(id, rc)
    return Call("change_visibility", [k.zset, k.hash], [mid, check_seconds("vt", vt), fence])


def next_visible(k: Keys) -> Call:
    return Call("next_visible", [k.zset, k.hash], [])


def parse_next_visible(reply: Sequence[Any]) -> float | None:
    rest = check_status(reply)[1:]
    return int(rest[0]) / 1000 if rest else None


def move_steps(
    src: Keys, dst: Keys, items: Sequence[Fenced], *, count: int = 0, realtime: bool
) -> Steps:
    """Move messages (``items``, or the oldest ``count``); returns the ids they got in the
    target queue ("" for one not moved)."""
    channel = dst.notify(dst.channel) if realtime else ""
    picks: list[str | int | bytes] = [x for item in items for x in item]
    if not src.cluster:
        reply = yield Call(
            "move", [src.zset, src.hash, dst.zset, dst.hash], [channel, count, *picks]
        )
        return _parse_moved(reply, src, dst)
    # Two queues are two slots on a cluster: copy, then delete what was copied, fenced by the
    # receive count it had when copied. A failure in between leaves a duplicate, never a loss.
    taken = _parse_taken((yield Call("move_out", [src.zset, src.hash], [count, *picks])), src)
    if not any(taken):
        return ["" for _ in taken]
    bodies: list[str | int | bytes] = [x for t in taken for x in (t[:2] if t else ("", ""))]
    reply = yield Call("move_in", [dst.zset, dst.hash], [channel, *bodies])
    moved = _parse_moved(reply, src, dst)
    yield delete(src, [(_text(t[0]), int(t[2])) for t in taken if t])
    return moved


def _parse_taken(reply: Sequence[Any], src: Keys) -> list[tuple[bytes, bytes, bytes] | None]:
    """move_out's reply: (id, body, receive count) per message, None for one not there."""
    if _text(reply[0]) == "queueNotFound":
        raise QueueNotFound(detail=f"no queue {src.qname!r}")
    rest = reply[1:]
    return [
        (rest[i], rest[i + 1], rest[i + 2]) if rest[i] else None for i in range(0, len(rest), 3)
    ]


def _parse_moved(reply: Sequence[Any], src: Keys, dst: Keys) -> list[str]:
    if _text(reply[0]) == "queueNotFound":
        raise QueueNotFound(detail=f"no queue {(src if int(reply[1]) == 1 else dst).qname!r}")
    return [_text(x) for x in reply[1:]]


def redrive_steps(src: Keys, dst: Keys, count: object, *, realtime: bool) -> Steps:
    """The ids the oldest ``count`` got in the target; an expired one is not moved."""
    moved: list[str] = yield from move_steps(
        src, dst, [], count=check_count(count), realtime=realtime
    )
    return [m for m in moved if m]


def expire(k: Keys, cursor: object, count: object) -> Call:
    start = _check_int("cursor", cursor, 0, 2**64 - 1)
    return Call("expire", [k.zset, k.hash, k.expired], [start, check_count(count)])


def parse_expired(reply: Sequence[Any]) -> Expired:
    """expire.lua's reply: {"ok", next cursor, id...}."""
    rest = check_status(reply)
    return Expired([_text(x) for x in rest[2:]], int(rest[1]))


def notify(k: Keys) -> Call:
    return Call("notify", [k.zset], [k.notify(k.channel)])


def purge(k: Keys) -> Call:
    return Call("purge", [k.zset, k.hash], [])


_ID_CHARS_RE = re.compile(r"[a-zA-Z0-9:]*")


def check_ids(ids: object) -> list[str]:
    if isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
        raise InvalidValue("ids must be a list of message ids", detail=f"got {type(ids).__name__}")
    checked = list(ids)
    if len(checked) > MAX_BATCH:
        # Beyond this the script could not even spread its arguments (Lua's unpack limit).
        raise InvalidValue(f"at most {MAX_BATCH} ids go in one batch", detail=f"got {len(checked)}")
    # One pattern match for the whole batch when every id looks right; else the id by id
    # check finds the first bad one and says what is wrong with it.
    if all(type(i) is str and len(i) == 32 for i in checked) and _ID_CHARS_RE.fullmatch(
        "".join(checked)
    ):
        return checked
    return [check_id(i) for i in checked]


def check_messages(messages: object) -> list[object]:
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise MessageNotString(
            "messages must be a list of strings", detail=f"got {type(messages).__name__}"
        )
    if len(messages) > MAX_BATCH:
        raise InvalidValue(
            f"at most {MAX_BATCH} messages go in one batch", detail=f"got {len(messages)}"
        )
    return list(messages)


# Peeking, pausing, making visible ---------------------------------------------------------------

MAX_PEEK = 1000  # messages a peek returns at most: one page never holds Redis for long
MAX_OFFSET = 2**53  # where a peek may start: past any queue, and exact in a Lua number
PAUSED_FIELD = "paused"  # the hash field pause.lua sets (PAUSED in _lib.lua)


def peek(k: Keys, offset: object, count: object) -> Call:
    start = _check_int("offset", offset, 0, MAX_OFFSET)
    return Call("peek", [k.zset, k.hash], [start, _check_int("count", count, 1, MAX_PEEK)])


def parse_peek(reply: Sequence[Any], offset: int) -> Peek:
    """peek.lua's reply: {"ok", now, total, paused since, (id, body, rc, fr, score)...}."""
    rest = check_status(reply)
    now, total, paused = int(rest[1]), int(rest[2]), _text(rest[3])
    rows = rest[4:]
    messages = []
    for i in range(0, len(rows), 5):
        mid = _text(rows[i])
        body = rows[i + 1]
        text = body.decode("utf-8", "surrogateescape") if isinstance(body, bytes) else body
        visible_at = int(float(rows[i + 4]))
        messages.append(
            PeekedMessage(
                mid,
                text,
                int(rows[i + 2]),
                int(rows[i + 3]),
                sent_ms(mid),
                visible_at,
                visible_at <= now,
            )
        )
    after = offset + len(messages)
    return Peek(
        messages,
        offset,
        total,
        after if after < total and messages else None,
        int(paused) if paused else None,
    )


def pause(k: Keys, paused: bool) -> Call:
    return Call("pause", [k.hash], ["1" if paused else "0", k.notify(k.pause_channel)])


def make_visible(k: Keys, id: object) -> Call:
    return Call("make_visible", [k.zset, k.hash], [check_id(id), k.notify(k.channel)])


def move_selected_steps(src: Keys, dst: Keys, ids: object, *, realtime: bool) -> Steps:
    items: list[Fenced] = [(i, "") for i in check_ids(ids)]
    if not items:
        raise InvalidValue("ids must be a list of message ids", detail="the list is empty")
    moved: list[str] = yield from move_steps(src, dst, items, realtime=realtime)
    return moved
