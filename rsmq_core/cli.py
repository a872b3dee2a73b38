"""``rsmq``: RSMQ queues from the command line, on the blocking :class:`~rsmq_core.RSMQ` client.

Every command prints one JSON document on stdout: what the library call returns (a message
or the attributes as an object, ids and names as strings, counts as numbers). Errors go to
stderr as ``rsmq: <what>: <why>``. The URL comes from ``--url``, else ``$REDIS_URL``, else
``redis://localhost:6379/0``; a password in it is never printed. The TLS options come from
``--tls-*``, else the ``REDIS_TLS_*`` variables the worker and the web app read.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import redis

from . import __version__
from . import _protocol as p
from .client import DEFAULT_URL
from .connection import (
    ENV_NAMES,
    VERIFY_MODES,
    ConnectionOptions,
    check_url,
    explain,
    mask_url,
    scrub,
)
from .environment import EnvReader
from .errors import MessageNotString, RSMQError
from .models import Message
from .sync import RSMQ

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
# A CLI should fail fast on an unreachable host, not wait for the OS's minutes-long default.
# A ``?socket_connect_timeout=`` in the URL wins over this.
CONNECT_TIMEOUT = 5.0

EPILOG = """\
output: one JSON document on stdout; an empty receive or pop prints null (exit status 0).
exit status: 0 done, 1 refused by RSMQ or Redis, 2 usage error, 3 cannot connect to Redis."""

Command = Callable[[RSMQ, argparse.Namespace], Any]
# Records an operator's action: (client, what, queue, message id or "" for the whole queue,
# detail). rsmq_core knows nothing of status events: a package that does (realtime) registers
# one under the entry point group "rsmq_core.actions", and the CLI calls each it finds.
Recorder = Callable[[RSMQ, str, str, str, str | None], None]
RECORDERS_GROUP = "rsmq_core.actions"
# Reads those events back: (client, queue, message id or "" for the queue's own) -> the events
# as JSON objects, oldest first; registered under "rsmq_core.timelines".
Reader = Callable[[RSMQ, str, str], list[dict[str, Any]]]
READERS_GROUP = "rsmq_core.timelines"
# Reads a message's last status as a JSON object (None when none is known); given seconds to
# wait, its final one (done, dead or deleted), raising TimeoutError when none comes in time.
# Registered under "rsmq_core.statuses".
StatusReader = Callable[[RSMQ, str, str, float | None], dict[str, Any] | None]
STATUSES_GROUP = "rsmq_core.statuses"
TLS_OPTIONS = {field: "--" + field.replace("_", "-") for field in ENV_NAMES}


# Commands: each returns what to print -------------------------------------------------------


def _settings(args: argparse.Namespace) -> dict[str, int]:
    """The --vt, --delay, --maxsize, --dedup-window and --retention given, so the library
    applies its own defaults."""
    names = ("vt", "delay", "maxsize", "dedup_window", "retention")
    return {k: v for k in names if (v := getattr(args, k)) is not None}


def _create(client: RSMQ, args: argparse.Namespace) -> bool:
    client.create_queue(args.qname, **_settings(args))
    return True


def _list(client: RSMQ, args: argparse.Namespace) -> list[str]:
    return client.list_queues()


def _attributes(client: RSMQ, args: argparse.Namespace) -> dict[str, Any]:
    return dataclasses.asdict(client.get_queue_attributes(args.qname))


def _set(client: RSMQ, args: argparse.Namespace) -> dict[str, Any]:
    settings = _settings(args)
    attributes = dataclasses.asdict(client.set_queue_attributes(args.qname, **settings))
    _did(args, "changed", detail=", ".join(f"{k}={v}" for k, v in settings.items()))
    return attributes


def _stdin_text() -> str:
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageNotString(detail=f"stdin is not valid UTF-8 (byte {exc.start})") from None


def _send(client: RSMQ, args: argparse.Namespace) -> str | list[str]:
    if not args.batch:
        message = _stdin_text() if args.message == "-" else args.message
        return client.send_message(args.qname, message, delay=args.delay, dedup_id=args.dedup_id)
    # One message per line, the line break removed. One all-or-none call: a line refused
    # (too long) sends nothing, and more than 1000 lines are refused as the library's batch is.
    lines = _stdin_text().split("\n")
    if lines[-1] == "":
        lines.pop()
    messages = [line.removesuffix("\r") for line in lines]
    # As the web API's Idempotency-Key: --dedup-id names the batch, line i is "{id}/{i}".
    dedup = None if args.dedup_id is None else [f"{args.dedup_id}/{i}" for i in range(len(lines))]
    return client.send_messages(args.qname, messages, delay=args.delay, dedup_ids=dedup)


def _message(m: Message | None) -> dict[str, Any] | None:
    return None if m is None else m.to_json()


def _receive(client: RSMQ, args: argparse.Namespace) -> Any:
    if args.count is None:
        return _message(client.receive_message(args.qname, vt=args.vt))
    return [_message(m) for m in client.receive_messages(args.qname, args.count, vt=args.vt)]


def _pop(client: RSMQ, args: argparse.Namespace) -> dict[str, Any] | None:
    return _message(client.pop_message(args.qname))


def _delete(client: RSMQ, args: argparse.Namespace) -> int:
    """Any number of ids, 1000 per round trip; every id is checked before any is deleted.
    The script's answer per id tells which were there, so each of those leaves an event."""
    ids = [p.check_id(i) for i in args.ids]
    keys = client.keys(args.qname)
    deleted = 0
    for i in range(0, len(ids), p.MAX_BATCH):
        batch = ids[i : i + p.MAX_BATCH]
        call = p.delete(keys, [p.fenced(id, None) for id in batch])
        for id, done in zip(batch, p.parse_flags(client._call(call)), strict=True):
            if done:
                deleted += 1
                _did(args, "deleted", id)
    return deleted


def _visibility(client: RSMQ, args: argparse.Namespace) -> bool:
    return client.change_message_visibility(args.qname, args.id, args.vt)


def _delete_queue(client: RSMQ, args: argparse.Namespace) -> bool:
    client.delete_queue(args.qname)
    return True


def _purge(client: RSMQ, args: argparse.Namespace) -> int:
    count = client.purge_queue(args.qname)
    _did(args, "purged", detail=f"{count} message(s)")
    return count


def _redrive(client: RSMQ, args: argparse.Namespace) -> int | dict[str, str]:
    """Move messages back from a dead-letter queue, oldest first, 1000 per round trip."""
    if args.ids is not None:
        return _redrive_selected(client, args)
    left: int | None = args.count
    moved = 0
    while True:
        # A --count below 1 goes to the library as it is, to be refused there.
        step = p.MAX_BATCH if left is None else min(left, p.MAX_BATCH)
        batch = client.redrive_messages(args.qname, args.to_qname, count=step)
        moved += batch
        left = None if left is None else left - batch
        if batch < step or left == 0:
            _did(args, "redriven", detail=f"{moved} message(s) to {args.to_qname}")
            return moved


def _redrive_selected(client: RSMQ, args: argparse.Namespace) -> dict[str, str]:
    """Move the messages --ids, 1000 per round trip; prints {old id: new id} of those moved."""
    ids = [p.check_id(i) for i in args.ids]
    moved: dict[str, str] = {}
    for i in range(0, len(ids), p.MAX_BATCH):
        batch = ids[i : i + p.MAX_BATCH]
        new = client.move_messages(args.qname, batch, args.to_qname)
        moved |= {old: n for old, n in zip(batch, new, strict=True) if n}
    for old, n in moved.items():
        _did(args, "redriven", old, f"to {args.to_qname} as {n}")
    return moved


def _peek(client: RSMQ, args: argparse.Namespace) -> dict[str, Any]:
    return client.peek_messages(args.qname, offset=args.offset, count=args.count).to_json()


def _timeline(client: RSMQ, args: argparse.Namespace) -> list[dict[str, Any]]:
    """A message's events (or, without an id, the queue's own actions), from the reader a
    package that records them registers; without one there is nothing to read."""
    id = "" if args.id is None else p.check_id(args.id)
    client.get_queue_attributes(args.qname)  # queueNotFound for a queue that does not exist
    read: Reader = _registered(READERS_GROUP)
    return read(client, args.qname, id)


def _status(client: RSMQ, args: argparse.Namespace) -> dict[str, Any] | None:
    """A message's last status, with its handler's result once done (see StatusReader)."""
    read: StatusReader = _registered(STATUSES_GROUP)
    return read(client, args.qname, p.check_id(args.id), args.wait)


def _registered(group: str) -> Any:
    found = list(importlib.metadata.entry_points(group=group))
    if not found:
        raise LookupError("no package that records events is installed (rsmq-realtime's realtime)")
    return found[0].load()


def _wait_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def _did(args: argparse.Namespace, what: str, id: str = "", detail: str | None = None) -> None:
    """Note an action for the recorders (see Recorder), once it is done."""
    args.actions.append((what, id, detail))


def _retry(client: RSMQ, args: argparse.Namespace) -> bool:
    changed = client.make_visible(args.qname, args.id)
    if changed:
        _did(args, "made visible", args.id)
    return changed


def _pause(client: RSMQ, args: argparse.Namespace) -> bool:
    changed = client.pause_queue(args.qname)
    if changed:
        _did(args, "paused")
    return changed


def _resume(client: RSMQ, args: argparse.Namespace) -> bool:
    changed = client.resume_queue(args.qname)
    if changed:
        _did(args, "resumed")
    return changed


def _schedule_add(client: RSMQ, args: argparse.Namespace) -> dict[str, Any]:
    message = _stdin_text() if args.message == "-" else args.message
    return client.add_schedule(
        args.name, args.qname, message, cron=args.cron, every=args.every, catch_up=args.catch_up
    ).to_json()


def _schedule_list(client: RSMQ, args: argparse.Namespace) -> list[dict[str, Any]]:
    return [s.to_json() for s in client.list_schedules()]


def _schedule_remove(client: RSMQ, args: argparse.Namespace) -> bool:
    return client.remove_schedule(args.name)


def _record(client: RSMQ, args: argparse.Namespace) -> None:
    """Hand each action done to each recorder installed. The action is done: a recorder that
    fails says so on stderr, and the command still succeeds."""
    if not args.actions:
        return
    for entry in importlib.metadata.entry_points(group=RECORDERS_GROUP):
        try:
            record: Recorder = entry.load()
            for what, id, detail in args.actions:
                record(client, what, args.qname, id, detail)
        except Exception as exc:
            print(
                f"rsmq: done, but {entry.name} could not record it: {explain(exc)}", file=sys.stderr
            )


# Parser --------------------------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options valid before and after the command; after it they only override."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--url",
        default=default(None),
        help="Redis URL (default: $REDIS_URL if set, else redis://localhost:6379/0)",
    )
    parser.add_argument("--ns", default=default("rsmq"), help="key namespace (default: rsmq)")
    parser.add_argument(
        "--cluster",
        action=argparse.BooleanOptionalAction,
        default=default(None),
        help="the URL names a node of a Redis Cluster (default: on if $REDIS_CLUSTER is true)",
    )
    parser.add_argument(
        "--realtime",
        action=argparse.BooleanOptionalAction,
        default=default(True),
        help="sends and redrives PUBLISH the queue's new size on {ns}:rt:{qname}, as RSMQ's "
        "realtime mode does, so waiting workers hear of them (default: on)",
    )
    parser.add_argument(
        "--pretty", action="store_true", default=default(False), help="indent the JSON"
    )
    helps = {
        "tls_verify": "for rediss:// URLs: 'required' checks the server's certificate and host "
        "name, 'none' accepts any (Heroku Redis's are self-signed)",
        "tls_ca_file": "PEM file of the CA that signed the server's certificate",
        "tls_cert_file": "PEM client certificate, for servers that ask for one",
        "tls_key_file": "PEM key of the client certificate",
    }
    for field, option in TLS_OPTIONS.items():
        parser.add_argument(
            option,
            default=default(None),
            choices=VERIFY_MODES if field == "tls_verify" else None,
            metavar=None if field == "tls_verify" else "PATH",
            help=f"{helps[field]} (default: ${ENV_NAMES[field]})",
        )


def invoked_as(package: str) -> str:
    """How the process of ``package`` (worker, web) was started, for its usage line: by its
    console script (``rsmq-worker``) or as ``python -m worker``."""
    script = f"rsmq-{package}"
    return script if os.path.basename(sys.argv[0]) == script else f"python -m {package}"


def entry_parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """The parser of a command of the project (``rsmq``, ``python -m worker``, ``python -m
    web``): ``--help`` and ``--version`` answer, and exit, before anything reads a setting
    or touches Redis."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=__version__)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = entry_parser("rsmq", "Manage RSMQ queues and messages in Redis.", EPILOG)
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Command, help: str, aliases: Sequence[str] = ()) -> Any:
        sub = commands.add_parser(
            name, aliases=list(aliases), help=help, description=help, parents=[common]
        )
        sub.set_defaults(run=run)
        if name != "list":
            sub.add_argument("qname", metavar="QNAME")
        return sub

    def seconds(sub: argparse.ArgumentParser, *names: str) -> None:
        for name in names:
            sub.add_argument(f"--{name}", type=int, metavar="N", help=f"{name} in seconds")

    def settings(sub: argparse.ArgumentParser) -> None:
        seconds(sub, "vt", "delay")
        sub.add_argument(
            "--maxsize", type=int, metavar="N", help="max message bytes, 1024..65536 or -1"
        )
        sub.add_argument(
            "--dedup-window",
            type=int,
            metavar="N",
            help="seconds a dedup id is remembered, 1..86400 (default 300)",
        )
        sub.add_argument(
            "--retention",
            type=int,
            metavar="N",
            help="seconds after its send from which a message is never delivered, but dropped "
            "(0..9999999; 0, the default, keeps messages forever)",
        )

    settings(command("create", _create, "create a queue (prints true)"))
    command("list", _list, "list the queues' names")
    command("attributes", _attributes, "show a queue's attributes", aliases=["attrs"])
    settings(command("set", _set, "change a queue's settings (prints attributes)"))

    send = command("send", _send, "send a message (prints its id, or with --batch a list)")
    how = send.add_mutually_exclusive_group(required=True)
    how.add_argument("message", nargs="?", metavar="MESSAGE", help="the body; - reads stdin")
    how.add_argument(
        "--batch",
        action="store_true",
        help="send each line of stdin as a message, all or none, at most 1000",
    )
    seconds(send, "delay")
    send.add_argument(
        "--dedup-id",
        metavar="ID",
        help="a send of the same ID within the queue's dedup window stores nothing and prints "
        "the first id; with --batch, line i gets ID/i",
    )

    receive = command("receive", _receive, "receive a message, hiding it for vt (or null)")
    seconds(receive, "vt")
    receive.add_argument("--count", type=int, metavar="N", help="up to N, printed as a list")
    command("pop", _pop, "receive and delete a message (or null)")
    delete = command("delete", _delete, "delete messages by id (prints how many)")
    delete.add_argument("ids", nargs="+", metavar="ID")
    visibility = command("visibility", _visibility, "hide a message for VT seconds from now")
    visibility.add_argument("id", metavar="ID")
    visibility.add_argument("vt", type=int, metavar="VT")
    command("delete-queue", _delete_queue, "delete a queue and its messages (prints true)")
    command("purge", _purge, "delete every message, keep the queue (prints how many)")
    redrive = command(
        "redrive", _redrive, "move messages from QNAME (a dead-letter queue) back to TO_QNAME"
    )
    redrive.add_argument("to_qname", metavar="TO_QNAME")
    which = redrive.add_mutually_exclusive_group()
    which.add_argument("--count", type=int, metavar="N", help="at most N (default: all)")
    which.add_argument(
        "--ids", nargs="+", metavar="ID", help="only these (prints {old id: new id})"
    )
    peek = command(
        "peek", _peek, "show messages, visible and hidden, without receiving them (a page)"
    )
    peek.add_argument("--offset", type=int, default=0, metavar="N", help="from the Nth (0)")
    peek.add_argument("--count", type=int, default=50, metavar="N", help="at most N (50)")
    retry = command(
        "retry",
        _retry,
        "make a message visible now (prints whether it was there)",
        aliases=["make-visible"],
    )
    retry.add_argument("id", metavar="ID")
    command(
        "pause",
        _pause,
        "pause a queue for this project's workers (prints whether it "
        "changed); sends are still accepted, RSMQ clients are unaffected",
    )
    command("resume", _resume, "resume a paused queue (prints whether it changed)")
    timeline = command(
        "timeline",
        _timeline,
        "a message's status events, oldest first, or "
        "without ID the queue's own (paused, purged, redriven...)",
    )
    timeline.add_argument("id", nargs="?", metavar="ID")

    about = "periodic sends, fired by the workers (cron in UTC, or every N seconds)"
    schedule = commands.add_parser("schedule", help=about, description=about, parents=[common])
    actions = schedule.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_help = "add a schedule, or replace the one of that name (prints it, next_fire in epoch ms)"
    add = actions.add_parser("add", help=add_help, description=add_help, parents=[common])
    add.set_defaults(run=_schedule_add)
    add.add_argument("name", metavar="NAME")
    add.add_argument("qname", metavar="QNAME")
    add.add_argument("message", metavar="MESSAGE", help="the body; - reads stdin")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", metavar="EXPR", help='5 fields, in UTC: "*/5 * * * *"')
    when.add_argument("--every", type=int, metavar="N", help="every N seconds")
    add.add_argument(
        "--catch-up",
        default="once",
        metavar="once|skip",
        help="ticks missed while no worker ran: one send for all (once, the "
        "default) or none (skip)",
    )
    actions.add_parser("list", help="list the schedules", parents=[common]).set_defaults(
        run=_schedule_list
    )
    remove = actions.add_parser(
        "remove", help="remove a schedule (prints whether it was there)", parents=[common]
    )
    remove.set_defaults(run=_schedule_remove)
    remove.add_argument("name", metavar="NAME")
    status = command(
        "status",
        _status,
        "a message's last status, with its handler's result once done (null when none is known)",
    )
    status.add_argument("id", metavar="ID")
    status.add_argument(
        "--wait",
        type=_wait_seconds,
        metavar="SECONDS",
        help="wait up to SECONDS for it to end (done, dead, deleted, expired); exit status 1 when "
        "they pass first",
    )
    return parser


def _fail(text: str, status: int) -> int:
    print(f"rsmq: {text}", file=sys.stderr)
    return status


UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.RedisClusterException)


def _unreachable(exc: Exception, url: str) -> int:
    reason = scrub(explain(exc), url)
    return _fail(f"cannot connect to Redis at {mask_url(url)}: {reason}", EXIT_UNREACHABLE)


def _connection_options(args: argparse.Namespace) -> ConnectionOptions:
    """The --tls-* options, each falling back on its REDIS_TLS_* variable; an error names
    the one the bad value came from."""
    from_env = {f for f in TLS_OPTIONS if not getattr(args, f) and os.environ.get(ENV_NAMES[f])}
    names = {f: ENV_NAMES[f] if f in from_env else option for f, option in TLS_OPTIONS.items()}
    values = {names[f]: getattr(args, f) or os.environ.get(ENV_NAMES[f]) for f in TLS_OPTIONS}
    return ConnectionOptions.parse(values, names)


def _cluster(args: argparse.Namespace) -> bool:
    """--cluster or --no-cluster, else $REDIS_CLUSTER, read as strictly as the worker does."""
    if args.cluster is not None:
        return bool(args.cluster)
    return EnvReader(os.environ).boolean("REDIS_CLUSTER", False)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (argparse exits 2 itself on a usage error)."""
    args = build_parser().parse_args(argv)
    url: str = args.url or os.environ.get("REDIS_URL") or DEFAULT_URL
    try:
        check_url(url, "--url" if args.url else "REDIS_URL")
        cluster = _cluster(args)
    except ValueError as exc:
        return _fail(f"bad setting: {exc}", EXIT_USAGE)
    try:
        options = _connection_options(args)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        # A cluster client connects here, to learn the cluster's layout.
        client = RSMQ.from_url(
            url,
            ns=args.ns,
            realtime=args.realtime,
            cluster=cluster,
            connection=options,
            socket_connect_timeout=CONNECT_TIMEOUT,
        )
    except ValueError as exc:
        return _fail(f"invalid URL {mask_url(url)}: {scrub(str(exc), url)}", EXIT_USAGE)
    except RSMQError as exc:
        return _fail(f"{exc.name}: {exc.explain()}", EXIT_ERROR)
    except UNREACHABLE as exc:
        return _unreachable(exc, url)
    args.actions = []
    try:
        with client:
            result = args.run(client, args)
            _record(client, args)
    except RSMQError as exc:
        return _fail(f"{exc.name}: {exc.explain()}", EXIT_ERROR)
    except UNREACHABLE as exc:
        return _unreachable(exc, url)
    except LookupError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except TimeoutError as exc:  # status --wait ran out (redis-py's own is a RedisError)
        return _fail(str(exc), EXIT_ERROR)
    except redis.RedisError as exc:
        if isinstance(exc, redis.exceptions.MovedError | redis.exceptions.ClusterCrossSlotError):
            # A plain client on a node of a cluster: the node refuses keys of other slots.
            return _fail(
                f"{mask_url(url)} is a node of a Redis Cluster ({exc}): add --cluster "
                "(or set REDIS_CLUSTER=true)",
                EXIT_USAGE,
            )
        return _fail(f"{type(exc).__name__}: {scrub(explain(exc), url)}", EXIT_ERROR)
    # ASCII escapes keep the output printable whatever the bodies hold.
    print(json.dumps(result, indent=2 if args.pretty else None))
    return EXIT_OK
