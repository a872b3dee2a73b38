"""Sends acknowledged only once replicas have them (``min_replicas``), for both clients.

A Lua script may not call WAIT, and WAIT counts the writes of the connection that issues it.
So the send script and a WAIT go out together in one pipeline without a transaction: one
connection, one round trip. A pipeline whose connection drops is sent again whole on a new
connection, WAIT included, so a WAIT never confirms a write another connection made.

What a confirmation promises: when the send returns, ``min_replicas`` replicas had received
the messages (in memory: WAIT says nothing of their disks), so a failover to one of them
keeps the messages. What it does not: that the master it was sent to stays master, or that
Sentinel promotes a replica that had them when fewer replicas confirmed than exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from redis.exceptions import NoScriptError

from ._protocol import Call
from .errors import NotReplicated, RSMQError

DEFAULT_TIMEOUT: Final = 1.0  # seconds a send waits for its replicas


def check(min_replicas: int, timeout: float, *, cluster: bool, socket_timeout: Any) -> None:
    """``ValueError`` naming the option when the client's min_replicas cannot work."""
    if isinstance(min_replicas, bool) or not isinstance(min_replicas, int) or min_replicas < 0:
        raise ValueError(f"min_replicas={min_replicas!r}: give a whole number, 0 or more")
    if not min_replicas:
        return
    if cluster:
        raise ValueError("min_replicas is not supported on a Redis Cluster: use 0 (the default)")
    if not 0 < timeout < float("inf"):
        raise ValueError(f"replica_timeout={timeout!r}: give a number of seconds above 0")
    if isinstance(socket_timeout, int | float) and socket_timeout <= timeout:
        raise ValueError(
            f"socket_timeout={socket_timeout!r} is not above replica_timeout={timeout!r}: "
            "a send waiting for its replicas would time out and be sent again"
        )


def commands(sha: str, call: Call, min_replicas: int, timeout: float) -> list[tuple[Any, ...]]:
    """The pipeline: the script by its SHA, then WAIT."""
    return [
        ("EVALSHA", sha, len(call.keys), *call.keys, *call.args),
        ("WAIT", min_replicas, max(1, round(timeout * 1000))),
    ]


def settle(results: Sequence[Any]) -> tuple[Any, int] | None:
    """The script's reply and how many replicas confirmed it; None when Redis did not know
    the script (a restarted or newly promoted master): load it, and send again."""
    reply, acked = results
    if isinstance(reply, NoScriptError):
        return None
    for result in (reply, acked):
        if isinstance(result, Exception):
            raise result
    return reply, int(acked)


def not_loaded(script: str) -> NoScriptError:
    """Redis forgot the script again right after loading it (a second failover, say)."""
    return NoScriptError(f"the {script} script could not be loaded: nothing was sent")


def _error(ids: Sequence[str], acked: int, wanted: int, timeout: float) -> NotReplicated:
    what = f"Message {ids[0]} is" if len(ids) == 1 else f"{len(ids)} messages are"
    return NotReplicated(
        f"{what} stored on the master but not confirmed by {wanted} replica(s) within "
        f"{timeout:g}s ({acked} confirmed): it may be lost if the master fails before a replica "
        "has it; do not send it again, it would be stored twice",
        ids=tuple(ids),
        replicas=acked,
        wanted=wanted,
    )


def confirm(
    results: list[str | RSMQError], acked: int, wanted: int, timeout: float
) -> list[str | RSMQError]:
    """Each sent message's id, or NotReplicated for it if too few replicas confirmed."""
    if acked >= wanted:
        return results
    return [r if isinstance(r, RSMQError) else _error([r], acked, wanted, timeout) for r in results]


def confirm_all(ids: list[str], acked: int, wanted: int, timeout: float) -> list[str]:
    """The ids of an all-or-none batch; NotReplicated for them all if too few confirmed."""
    if acked < wanted:
        raise _error(ids, acked, wanted, timeout)
    return ids
