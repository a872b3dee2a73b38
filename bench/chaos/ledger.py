"""The soak's bookkeeping, free of I/O but for reading its files: every message classified.

Inputs: the sender's attempts (a seq, and the id if ``send_message`` returned one), the
handlers' journal lines (one per handled copy), the faults with their times, and the worker
processes' lives. Classes, per seq:

- *handled*: acknowledged and journaled at least once;
- *lost*: acknowledged (an id came back) and never journaled;
- *duplicated*: journaled more than once. Every copy but the last is one the queue gave out
  again; each such copy must be *explained* by a fault it was in flight at (see
  :func:`explain`), otherwise it is counted as unexplained;
- *unexpected*: journaled but never acknowledged. An attempt whose call failed is
  indeterminate (Redis may have stored it before the reply was lost): journaled, it is
  counted here as "indeterminate, stored"; a seq never attempted at all is a *phantom*.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# How long after its journal line a copy's delete may still be in flight when the fault
# hits: normally milliseconds; a worker's calls retry a dropped connection for about a second.
DELETE_WINDOW = 2.0
# How far before a Redis kill a copy's delete may have been acknowledged but not yet on
# disk (appendfsync everysec), and how long after Redis is back a delete may still be retried.
REDIS_WINDOW = 2.0

WORKER_KILL = "worker kill"
REDIS_KILL = "redis kill"
SCRIPT_FLUSH = "script flush"
CLIENT_KILL = "client kill"
PROXY_CUT = "proxy cut"
PROXY_DROP = "proxy drop"
SEND_RETRIED = "send retried"


@dataclass(frozen=True, slots=True)
class Send:
    """One call of send_message: id None when the call raised (indeterminate)."""

    seq: int
    t0: float
    t1: float
    id: str | None


@dataclass(frozen=True, slots=True)
class Record:
    """One journal line: a copy of a message that a handler finished."""

    seq: int
    id: str
    rc: int
    pid: int
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault, from ``t`` until it was over (``t_end``: Redis accepting again, ...)."""

    kind: str
    t: float
    t_end: float
    slot: int | None = None  # the worker slot (proxy port) it hit, when it hit one
    pid: int | None = None  # the worker killed
    new_pid: int | None = None  # the worker started in its place
    note: str = ""


@dataclass(frozen=True, slots=True)
class Life:
    """A worker process: its slot, when it was started, and when it was killed (if it was)."""

    pid: int
    slot: int
    started: float
    ended: float | None = None


@dataclass
class Verdict:
    acknowledged: int = 0
    indeterminate: int = 0
    handled: int = 0
    lost: list[int] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)
    extra_copies: int = 0
    stored_twice: int = 0  # seqs journaled under two ids: a send stored twice
    causes: Counter[str] = field(default_factory=Counter)
    unexplained: list[str] = field(default_factory=list)
    unexpected: int = 0  # indeterminate sends that were stored and handled
    phantoms: list[int] = field(default_factory=list)
    dead_lettered: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Recovery:
    """After a fault: seconds until the first handler started anywhere, and until every
    worker that was at work before it (and lived on) started one again."""

    kind: str
    t: float
    down: float
    first: float | None
    all_back: float | None
    workers: int
    note: str = ""


def read_journal(folder: Path) -> list[Record]:
    """Every journal line in ``folder`` (``<pid>.log`` files of ``bench.handlers:journal``)."""
    records = []
    for path in sorted(folder.glob("*.log")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            try:
                seq, mid, rc, pid, start, end = parts
                records.append(Record(int(seq), mid, int(rc), int(pid), float(start), float(end)))
            except ValueError:
                raise ValueError(f"{path}:{n}: not a journal line: {line!r}") from None
    return records


def read_proxy_log(path: Path) -> list[Fault]:
    """The proxy's drops and cuts, as faults on their slots."""
    faults = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if len(parts) != 3 or parts[1] not in ("drop", "cut") or not parts[2].isdigit():
            raise ValueError(f"{path}:{n}: not a proxy log line: {line!r}")
        t = float(parts[0])
        kind = PROXY_DROP if parts[1] == "drop" else PROXY_CUT
        faults.append(Fault(kind, t, t, slot=int(parts[2])))
    return faults


def explain(copy: Record, faults: Sequence[Fault], slot_of: dict[int, int]) -> str | None:
    """The fault a copy given out again was in flight at, or None.

    - the worker that journaled it was killed before its delete could land;
    - Redis was killed around it (the delete failed, or, with everysec, was not yet on disk);
    - the connection of that worker's slot was dropped or cut while the delete was in flight.
    SCRIPT FLUSH and CLIENT KILL of the subscribers never explain one: neither should cost a
    message its delete.
    """
    for f in faults:
        if f.kind == WORKER_KILL and f.pid == copy.pid and 0 <= f.t - copy.end <= DELETE_WINDOW:
            return WORKER_KILL
        if f.kind == REDIS_KILL and f.t - REDIS_WINDOW <= copy.end <= f.t_end + REDIS_WINDOW:
            return REDIS_KILL
        if (
            f.kind in (PROXY_DROP, PROXY_CUT)
            and f.slot == slot_of.get(copy.pid)
            and copy.start - 0.1 <= f.t <= copy.end + DELETE_WINDOW
        ):
            return f.kind
    return None


def classify(
    sends: Iterable[Send],
    records: Iterable[Record],
    faults: Sequence[Fault],
    lives: Iterable[Life],
    dead_lettered: Iterable[int] = (),
) -> Verdict:
    v = Verdict()
    attempts = {s.seq: s for s in sends}
    acked = {seq for seq, s in attempts.items() if s.id is not None}
    v.acknowledged = len(acked)
    v.indeterminate = len(attempts) - len(acked)
    v.dead_lettered = sorted(dead_lettered)
    slot_of = {life.pid: life.slot for life in lives}
    copies: dict[int, list[Record]] = defaultdict(list)
    for rec in records:
        copies[rec.seq].append(rec)
    for seq, recs in sorted(copies.items()):
        if seq not in attempts:
            v.phantoms.append(seq)
            continue
        if seq in acked:
            v.handled += 1
        else:
            v.unexpected += 1
        if len(recs) == 1:
            continue
        v.duplicated.append(seq)
        v.extra_copies += len(recs) - 1
        by_id: dict[str, list[Record]] = defaultdict(list)
        for rec in recs:
            by_id[rec.id].append(rec)
        if len(by_id) > 1:
            # One send stored under two ids: the client retried a call whose connection
            # dropped after Redis ran it. The sender talks to Redis directly, so only a
            # Redis kill can drop its connection.
            v.stored_twice += 1
            s = attempts[seq]
            if any(f.kind == REDIS_KILL and f.t - 1 <= s.t1 and s.t0 <= f.t_end for f in faults):
                v.causes[SEND_RETRIED] += len(by_id) - 1
            else:
                v.unexplained.append(f"seq {seq} was stored under {len(by_id)} ids")
        for group in by_id.values():
            group.sort(key=lambda r: r.end)
            for copy in group[:-1]:
                cause = explain(copy, faults, slot_of)
                if cause is None:
                    v.unexplained.append(
                        f"seq {seq} id {copy.id} rc {copy.rc}: handled by pid {copy.pid} at "
                        f"{copy.end:.3f}, given out again with no fault in flight"
                    )
                else:
                    v.causes[cause] += 1
    dead = set(v.dead_lettered)
    v.lost = sorted(seq for seq in acked if seq not in copies and seq not in dead)
    return v


def recoveries(faults: Sequence[Fault], records: Sequence[Record], lives: Sequence[Life]):
    """A :class:`Recovery` per fault the soak injected (random drops aside)."""
    starts: dict[int, list[float]] = defaultdict(list)
    for rec in records:
        starts[rec.pid].append(rec.start)
    for s in starts.values():
        s.sort()
    every = sorted(rec.start for rec in records)

    def first_after(times: list[float], t: float) -> float | None:
        i = bisect.bisect_left(times, t)
        return times[i] - t if i < len(times) else None

    out = []
    for f in faults:
        if f.kind == PROXY_DROP:
            continue
        if f.kind == WORKER_KILL:
            back = first_after(starts.get(f.new_pid or -1, []), f.t)
            out.append(Recovery(f.kind, f.t, 0.0, back, None, 1, "replacement's first message"))
            continue
        # Workers at work before the fault that lived on: when did each start a handler again?
        at_work = [
            life.pid
            for life in lives
            if life.started < f.t
            and (life.ended is None or life.ended > f.t_end)
            and first_after(starts.get(life.pid, []), 0.0) is not None
            and starts[life.pid][0] < f.t
        ]
        backs = []
        for pid in at_work:
            back = first_after(starts.get(pid, []), f.t_end)
            life = next(x for x in lives if x.pid == pid)
            if back is not None and (life.ended is None or f.t_end + back < life.ended):
                backs.append(back)
            elif life.ended is None:
                backs.append(float("inf"))  # alive to the end and never worked again
        first = first_after(every, f.t_end)
        out.append(
            Recovery(
                f.kind, f.t, f.t_end - f.t, first, max(backs, default=None), len(backs), f.note
            )
        )
    return out
