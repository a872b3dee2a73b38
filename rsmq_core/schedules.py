"""Periodic schedules: validation, next fire times, and the calls of schedule.lua.

A schedule is stored in two keys of the namespace that RSMQ never reads (and that are no
queue's: a queue name has no "@"): ``{ns}:@schedules``, a hash of each schedule's definition
(JSON) by name, and ``{ns}:@schedules:next``, a sorted set of each one's next fire time (epoch
milliseconds). Times are UTC throughout: a cron expression is read in UTC, never in the local
time zone of whichever worker happens to fire it.

Next fire times are computed here, in Python, and passed to the script; the server's clock
says what "now" is (the "due" call answers it), so workers whose clocks disagree still agree on
which ticks are due. Both clients drive the same steps (see ``_protocol.Steps``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cronsim import CronSim, CronSimError

from . import _protocol as p
from .errors import InvalidFormat, InvalidValue, MissingParameter, RSMQError
from .models import Fired, Firing, Schedule

CATCH_UP = ("once", "skip")
# How many due schedules one "due" call hands back; more are fired on the next round.
DUE_LIMIT = 100


def keys(ns: str) -> list[str]:
    return [f"{ns}:@schedules", f"{ns}:@schedules:next"]


def channel(ns: str) -> str:
    """Where adding or removing a schedule says "1", so that waiting workers look again."""
    return f"{ns}:rt:@schedules"


def check_cluster(cluster: bool) -> None:
    if cluster:
        # A tick's claim and its send are one script call, which on a cluster would have to
        # touch the schedules' slot and the queue's at once.
        raise RSMQError(
            "Schedules need a standalone Redis",
            detail="on a Redis Cluster the schedule and its queue live in different slots",
        )


MAX_NAME = 160  # characters of a schedule's name, as of a queue's (QNAME_RE)


def check_name(name: object) -> str:
    if name is None or name == "":
        raise MissingParameter("No schedule name supplied")
    if not isinstance(name, str) or not p.QNAME_RE.fullmatch(name):
        raise InvalidFormat(
            "Invalid schedule name format",
            detail=f"a schedule name is 1 to 160 of a-z, A-Z, 0-9, _ and - (got {name!r})",
        )
    return name


def check_cron(cron: object) -> str:
    if not isinstance(cron, str):
        raise InvalidFormat("Invalid cron format", detail=f"got {type(cron).__name__}")
    fields = cron.split()
    if len(fields) != 5:
        raise InvalidFormat(
            "Invalid cron format",
            detail=f"a cron expression has 5 fields, minute hour day month weekday "
            f"(got {len(fields)} in {cron!r})",
        )
    try:
        next(CronSim(cron, datetime.now(UTC)))
    except (CronSimError, StopIteration) as exc:
        raise InvalidFormat("Invalid cron format", detail=f"{exc} in {cron!r}") from None
    return " ".join(fields)


def check_every(every: object) -> int:
    text = f"every must be between 1 and {p.MAX_SECONDS}"
    if isinstance(every, bool) or not isinstance(every, int):
        raise InvalidValue(text, detail=f"got {every!r}, not a whole number of seconds")
    if not 1 <= every <= p.MAX_SECONDS:
        raise InvalidValue(text, detail=f"got {every}")
    return int(every)


def check_catch_up(catch_up: object) -> str:
    if catch_up not in CATCH_UP:
        raise InvalidValue('catch_up must be "once" or "skip"', detail=f"got {catch_up!r}")
    return str(catch_up)


def definition(
    qname: object, message: object, cron: object, every: object, catch_up: object
) -> tuple[str, bytes, dict[str, Any]]:
    """A checked definition, with the queue's name and the body; exactly one of cron and
    every."""
    queue = p.check_qname(qname)
    body = p.encode_message(message)
    if (cron is None) == (every is None):
        raise MissingParameter(
            "A schedule needs cron or every",
            detail="give a cron expression or a number of seconds, and not both",
        )
    timing: dict[str, Any] = {"cron": check_cron(cron)} if cron is not None else {}
    if every is not None:
        timing = {"every": check_every(every)}
    out = {"queue": queue, **timing, "message": message, "catch_up": check_catch_up(catch_up)}
    return queue, body, out


def next_fire(defn: dict[str, Any], after_ms: int) -> int:
    """The first tick strictly after ``after_ms`` (epoch milliseconds, UTC)."""
    every = defn.get("every")
    if every is not None:
        step = int(every) * 1000
        return (after_ms // step + 1) * step
    start = datetime.fromtimestamp(after_ms / 1000, UTC)
    return int(next(CronSim(str(defn["cron"]), start)).timestamp() * 1000)


def _call(ns: str, op: str, *args: str | int | bytes, more: Sequence[str] = ()) -> p.Call:
    return p.Call("schedule", [*keys(ns), *more], [op, *args])


def add_steps(
    ns: str,
    cluster: bool,
    name: object,
    qname: object,
    message: object,
    cron: object,
    every: object,
    catch_up: object,
) -> p.Steps:
    check_cluster(cluster)
    checked = check_name(name)
    qname, body, defn = definition(qname, message, cron, every, catch_up)
    queue = p.Keys.of(ns, qname)
    now = int(p.check_status((yield _call(ns, "due", 0)))[1])
    text = json.dumps(defn, separators=(",", ":"))
    reply = yield _call(
        ns,
        "add",
        checked,
        text,
        next_fire(defn, now),
        len(body),
        "P" + channel(ns),
        more=[queue.hash],
    )
    if p._text(reply[0]) == "queueNotFound":
        raise p.error_from_name("queueNotFound", f"No queue {queue.qname!r} to schedule for")
    return _schedule(checked, defn, int(p.check_status(reply)[1]))


def _schedule(name: str, defn: dict[str, Any], next_ms: int | None) -> Schedule:
    return Schedule(
        name,
        defn["queue"],
        defn["message"],
        defn.get("cron"),
        defn.get("every"),
        defn.get("catch_up", "once"),
        next_ms,
    )


def remove(ns: str, cluster: bool, name: object) -> p.Call:
    check_cluster(cluster)
    return _call(ns, "remove", check_name(name), "P" + channel(ns))


def list_call(ns: str, cluster: bool) -> p.Call:
    check_cluster(cluster)
    return _call(ns, "list")


def parse_list(reply: Sequence[Any]) -> list[Schedule]:
    """The schedules; a stored definition this version cannot read is left out (the workers
    name it in a warning, and ``remove_schedule`` removes it), not an error for the rest."""
    rest = p.check_status(reply)[1:]
    out = []
    for i in range(0, len(rest), 3):
        at = p._text(rest[i + 2])
        try:
            defn = json.loads(rest[i + 1])
            out.append(_schedule(p._text(rest[i]), defn, int(at) if at else None))
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
    return sorted(out, key=lambda s: s.name)


def fire_steps(ns: str, cluster: bool) -> p.Steps:
    """Claim and fire every tick due now; returns a :class:`Firing`."""
    check_cluster(cluster)
    due = p.check_status((yield _call(ns, "due", DUE_LIMIT)))
    now, earliest, rest = int(due[1]), p._text(due[2]), due[3:]
    fired = []
    # The next look: the earliest tick not due yet, or one of those due now, moved on.
    wake = [int(float(earliest))] if earliest else []
    for i in range(0, len(rest), 3):
        name, text, tick = p._text(rest[i]), p._text(rest[i + 1]), int(float(rest[i + 2]))
        try:
            defn = json.loads(text)
            queue = p.Keys.of(ns, defn["queue"])
            # A tick is missed when the one after it is due too: no worker ran for a whole
            # tick. "once" sends one message for all of them, "skip" none; either moves on.
            send = defn.get("catch_up") != "skip" or next_fire(defn, tick) > now
            after = next_fire(defn, now)
            body = p.encode_message(defn["message"])
        except (ValueError, TypeError, KeyError, AttributeError, RSMQError, CronSimError):
            # Not a definition of ours (written by hand, or by another version): said, and
            # left as it is, so that the others still fire.
            fired.append(Fired(name, "", tick, "invalid", None))
            continue
        wake.append(after)
        reply = yield _call(
            ns,
            "fire",
            name,
            text,
            tick,
            wake[-1],
            "1" if send else "",
            queue.notify(queue.channel),
            p.new_id_suffixes(1),
            body,
            more=[queue.zset, queue.hash],
        )
        status = p._text(reply[0])
        if status == "taken":
            continue
        mid = p._text(reply[1]) if status == "ok" else ""
        outcome = status if status != "ok" else ("sent" if mid else "skipped")
        fired.append(Fired(name, queue.qname, tick, outcome, mid or None))
    if len(rest) // 3 >= DUE_LIMIT:  # more may be due than one call hands back
        return Firing(fired, 0.0)
    return Firing(fired, max(0.0, (min(wake) - now) / 1000) if wake else None)
