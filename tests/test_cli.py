"""The `rsmq` command line: every command and error path, in-process and as a real process."""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from rsmq_core import RSMQ
from rsmq_core.cli import main
from rsmq_core.connection import mask_url

ROOT = Path(__file__).resolve().parent.parent
ID = re.compile(r"^[a-zA-Z0-9:]{32}$")
MESSAGE_FIELDS = ["id", "message", "rc", "fr", "sent"]


class Result(NamedTuple):
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


Run = Callable[..., Result]


@pytest.fixture
def run(capsys, monkeypatch, redis_url, ns) -> Run:
    """Run `rsmq --url <test redis> --ns <test ns> ARGS` in-process; ``stdin`` is bytes."""
    monkeypatch.delenv("REDIS_URL", raising=False)

    def call(*argv: str, stdin: bytes = b"", url: str | None = redis_url) -> Result:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        code = main([*(["--url", url] if url else []), "--ns", ns, *argv])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return call


@pytest.fixture
def client(redis_url, ns):
    with RSMQ.from_url(redis_url, ns=ns) as c:
        yield c


def ok(result: Result) -> Any:
    assert (result.code, result.err) == (0, ""), result
    return result.json


def refused(result: Result, name: str, message: str, *, detail: str | bool = False) -> None:
    """Exit 1 with RSMQ's error name and message, then `` (<detail>)`` when ``detail`` is a
    string (``True``: anything after the message)."""
    assert result.code == 1, result
    assert result.out == ""
    line = f"rsmq: {name}: {message}"
    if isinstance(detail, str):
        line += f" ({detail})"
    assert result.err.startswith(line) if detail is True else result.err == line + "\n"
    assert result.err.count("\n") == 1 and result.err.endswith("\n")


# Queues ----------------------------------------------------------------------------------------


def test_create_with_defaults_and_options(run, r, ns):
    assert ok(run("create", "a")) is True
    assert ok(run("create", "b", "--vt", "5", "--delay", "2", "--maxsize", "-1")) is True
    assert r.smembers(f"{ns}:QUEUES") == {"a", "b"}
    assert r.hmget(f"{ns}:a:Q", "vt", "delay", "maxsize") == ["30", "0", "65536"]
    assert r.hmget(f"{ns}:b:Q", "vt", "delay", "maxsize") == ["5", "2", "-1"]


def test_create_existing_queue_is_refused_and_unchanged(run, r, ns):
    ok(run("create", "q", "--vt", "7"))
    refused(run("create", "q", "--vt", "9"), "queueExists", "Queue exists")
    assert r.hget(f"{ns}:q:Q", "vt") == "7"


def test_list_is_sorted_and_empty_is_a_list(run):
    assert ok(run("list")) == []
    for name in ("b", "a", "c"):
        ok(run("create", name))
    assert ok(run("list")) == ["a", "b", "c"]


def test_attributes_and_alias(run, client):
    ok(run("create", "q", "--vt", "4"))
    client.send_messages("q", ["x", "y"])
    client.receive_message("q")
    attrs = ok(run("attributes", "q"))
    again = ok(run("attrs", "q"))
    # hiddenmsgs may change between the two if a second boundary passes (see below).
    assert {**again, "hiddenmsgs": 0} == {**attrs, "hiddenmsgs": 0}
    assert list(attrs) == [
        "vt",
        "delay",
        "maxsize",
        "totalrecv",
        "totalsent",
        "created",
        "modified",
        "msgs",
        "hiddenmsgs",
        "dedup_window",
        "retention",
        "totalexpired",
    ]
    assert (attrs["vt"], attrs["totalsent"], attrs["totalrecv"]) == (4, 2, 1)
    # RSMQ counts as hidden every message due from the start of this second, so the one
    # still visible may count too if it was sent within the current second.
    assert attrs["msgs"] == 2 and attrs["hiddenmsgs"] in (1, 2)


def test_send_with_a_dedup_id_and_the_dedup_window(run, client):
    ok(run("create", "q", "--dedup-window", "60"))
    assert ok(run("attributes", "q"))["dedup_window"] == 60
    first = ok(run("send", "q", "a", "--dedup-id", "order-7"))
    assert ok(run("send", "q", "b", "--dedup-id", "order-7")) == first
    ids = ok(run("send", "q", "--batch", "--dedup-id", "b1", stdin=b"x\ny\n"))
    assert ok(run("send", "q", "--batch", "--dedup-id", "b1", stdin=b"x\ny\n")) == ids
    assert client.send_message("q", "z", dedup_id="b1/1") == ids[1]
    assert client.get_queue_attributes("q").msgs == 3
    refused(
        run("send", "q", "a", "--dedup-id", "a b"),
        "invalidFormat",
        "Invalid dedup_id format",
        detail=True,
    )
    refused(
        run("set", "q", "--dedup-window", "0"),
        "invalidValue",
        "dedup_window must be between 1 and 86400",
        detail="got 0",
    )
    assert ok(run("set", "q", "--dedup-window", "10"))["dedup_window"] == 10


def test_create_and_set_the_retention(run, client):
    ok(run("create", "q", "--retention", "60"))
    assert ok(run("attributes", "q"))["retention"] == 60
    refused(
        run("set", "q", "--retention", "-1"),
        "invalidValue",
        "retention must be between 0 and 9999999",
        detail="got -1",
    )
    refused(
        run("create", "r", "--retention", "-5"),
        "invalidValue",
        "retention must be between 0 and 9999999",
        detail="got -5",
    )
    assert client.list_queues() == ["q"]
    changed = ok(run("set", "q", "--retention", "0"))
    assert (changed["retention"], changed["totalexpired"]) == (0, 0)


def test_set_changes_only_what_is_given(run, r, ns):
    ok(run("create", "q", "--vt", "4", "--delay", "1"))
    attrs = ok(run("set", "q", "--maxsize", "2048", "--vt", "9"))
    assert (attrs["vt"], attrs["delay"], attrs["maxsize"]) == (9, 1, 2048)
    assert r.hmget(f"{ns}:q:Q", "vt", "delay", "maxsize") == ["9", "1", "2048"]
    refused(run("set", "q"), "noAttributeSupplied", "No attribute was supplied")


def test_delete_queue(run, r, ns, client):
    ok(run("create", "q"))
    client.send_message("q", "x")
    assert ok(run("delete-queue", "q")) is True
    assert not r.exists(f"{ns}:q", f"{ns}:q:Q")
    assert ok(run("list")) == []
    refused(run("delete-queue", "q"), "queueNotFound", "Queue not found")


# Sending ---------------------------------------------------------------------------------------


def test_send_one_message(run, r, ns):
    ok(run("create", "q"))
    mid = ok(run("send", "q", "héllo"))
    assert ID.match(mid)
    assert r.hget(f"{ns}:q:Q", mid) == "héllo"
    assert r.zrange(f"{ns}:q", 0, -1) == [mid]


def test_send_dash_reads_all_of_stdin_verbatim(run, r, ns):
    ok(run("create", "q"))
    body = '{"a": 1}\nsecond line ✓\n'
    mid = ok(run("send", "q", "-", stdin=body.encode()))
    assert r.hget(f"{ns}:q:Q", mid) == body


def test_send_batch_one_message_per_line_in_order(run, client):
    ok(run("create", "q"))
    ids = ok(run("send", "q", "--batch", stdin=b"one\r\n\nthree\nfour"))
    assert len(ids) == 4 and all(ID.match(i) for i in ids)
    got = client.receive_messages("q", 10)
    assert [(m.id, m.message) for m in got] == list(
        zip(ids, ["one", "", "three", "four"], strict=True)
    )
    assert ok(run("send", "q", "--batch", stdin=b"")) == []


def test_send_with_delay_hides_the_message(run, r, ns):
    ok(run("create", "q"))
    mid = ok(run("send", "q", "later", "--delay", "100"))
    now_ms = int(r.time()[0]) * 1000
    assert r.zscore(f"{ns}:q", mid) >= now_ms + 99_000
    assert ok(run("receive", "q")) is None


def test_realtime_send_publishes_the_queue_size(run, r, ns):
    ok(run("create", "q"))
    with r.pubsub(ignore_subscribe_messages=True) as sub:
        sub.subscribe(f"{ns}:rt:q")
        assert sub.get_message(timeout=5) is None  # consumes the subscribe confirmation
        ok(run("send", "q", "a"))  # realtime by default: workers waiting hear of it
        ok(run("--realtime", "send", "q", "b"))
        ok(run("send", "q", "c", "--no-realtime"))
        r.publish(f"{ns}:rt:q", "marker")  # anything published before it arrives first
        got = [sub.get_message(timeout=5) for _ in range(3)]
    assert [m["data"] for m in got if m] == ["1", "2", "marker"]


def test_send_too_long_sends_nothing(run, r, ns):
    ok(run("create", "q", "--maxsize", "1024"))
    refused(run("send", "q", "x" * 1025), "messageTooLong", "Message too long", detail=True)
    result = run("send", "q", "-", stdin=b"z" * 1025)
    refused(result, "messageTooLong", "Message too long", detail=True)
    batch = b"ok\n" + b"y" * 1025 + b"\n"
    result = run("send", "q", "--batch", stdin=batch)
    refused(result, "messageTooLong", "Message too long", detail="at index 1 of the batch")
    assert ok(run("send", "q", "x" * 1024))  # exactly maxsize is fine
    assert r.zcard(f"{ns}:q") == 1
    assert r.hget(f"{ns}:q:Q", "totalsent") == "1"


def test_send_refuses_stdin_that_is_not_utf8(run, r, ns):
    ok(run("create", "q"))
    result = run("send", "q", "-", stdin=b"ok \xff")
    refused(
        result,
        "messageNotString",
        "Message must be a string",
        detail="stdin is not valid UTF-8 (byte 3)",
    )
    assert r.zcard(f"{ns}:q") == 0


# Receiving -------------------------------------------------------------------------------------


def test_receive_hides_the_message_and_counts_receives(run, r, ns):
    ok(run("create", "q"))
    mid = ok(run("send", "q", "hi"))
    got = ok(run("receive", "q", "--vt", "60"))
    assert list(got) == MESSAGE_FIELDS
    assert (got["id"], got["message"], got["rc"]) == (mid, "hi", 1)
    assert got["fr"] >= int(got["sent"])
    assert r.zscore(f"{ns}:q", mid) == got["fr"] + 60_000
    assert ok(run("receive", "q")) is None  # hidden now

    assert ok(run("visibility", "q", mid, "0")) is True
    again = ok(run("receive", "q"))
    assert (again["id"], again["rc"], again["fr"]) == (mid, 2, got["fr"])


def test_receive_count_returns_a_list(run, client):
    ok(run("create", "q"))
    ids = client.send_messages("q", ["a", "b", "c"])
    got = ok(run("receive", "q", "--count", "2"))
    assert [m["id"] for m in got] == ids[:2]
    assert [m["id"] for m in ok(run("receive", "q", "--count", "5"))] == ids[2:]
    assert ok(run("receive", "q", "--count", "5")) == []


def test_empty_receive_and_pop_print_null_and_succeed(run):
    ok(run("create", "q"))
    for command in ("receive", "pop"):
        result = run(command, "q")
        assert result == Result(0, "null\n", "")


def test_pop_removes_the_message(run, r, ns):
    ok(run("create", "q"))
    mid = ok(run("send", "q", "hi"))
    got = ok(run("pop", "q"))
    assert (got["id"], got["message"], got["rc"]) == (mid, "hi", 1)
    assert r.zcard(f"{ns}:q") == 0
    assert not any(r.hexists(f"{ns}:q:Q", field) for field in (mid, f"{mid}:rc", f"{mid}:fr"))
    assert r.hget(f"{ns}:q:Q", "totalrecv") == "1"


def test_delete_counts_what_it_deleted(run, r, ns, client):
    ok(run("create", "q"))
    a, b, c = client.send_messages("q", ["a", "b", "c"])
    assert ok(run("delete", "q", a, b, "x" * 32)) == 2
    assert r.zrange(f"{ns}:q", 0, -1) == [c]
    assert not r.hexists(f"{ns}:q:Q", a)
    assert ok(run("delete", "q", a)) == 0
    refused(run("delete", "q", "bad-id"), "invalidFormat", "Invalid id format", detail=BAD_ID)


def test_delete_takes_more_ids_than_one_batch_all_checked_first(run, client):
    ok(run("create", "q"))
    ids = client.send_messages("q", ["m"] * 1000) + client.send_messages("q", ["m"] * 500)
    refused(run("delete", "q", *ids, "bad-id"), "invalidFormat", "Invalid id format", detail=BAD_ID)
    assert client.get_queue_attributes("q").msgs == 1500  # none deleted
    assert ok(run("delete", "q", *ids)) == 1500
    assert client.get_queue_attributes("q").msgs == 0


def test_visibility_of_a_missing_message_is_false(run, r, ns):
    ok(run("create", "q"))
    mid = ok(run("send", "q", "hi"))
    assert ok(run("visibility", "q", "x" * 32, "10")) is False
    assert ok(run("visibility", "q", mid, "100")) is True
    assert r.zscore(f"{ns}:q", mid) >= int(r.time()[0]) * 1000 + 99_000


# Purge -----------------------------------------------------------------------------------------


def test_purge_deletes_every_message_and_keeps_the_queue(run, r, ns, client):
    ok(run("create", "q", "--vt", "7", "--maxsize", "2048"))
    client.send_messages("q", ["visible", "in-flight"])
    client.send_message("q", "delayed", delay=500)
    client.receive_message("q")
    assert ok(run("purge", "q")) == 3
    attrs = ok(run("attributes", "q"))
    assert (attrs["msgs"], attrs["vt"], attrs["maxsize"], attrs["totalrecv"]) == (0, 7, 2048, 1)
    assert sorted(r.hkeys(f"{ns}:q:Q")) == sorted(
        ["vt", "delay", "maxsize", "totalrecv", "totalsent", "created", "modified"]
    )
    assert ok(run("purge", "q")) == 0
    refused(run("purge", "nope"), "queueNotFound", "Queue not found")


def test_redrive_moves_back_from_a_dead_letter_queue(run, r, ns, client):
    ok(run("create", "q"))
    ok(run("create", "q-dead"))
    for i in range(0, 2500, 500):
        client.send_messages("q-dead", [str(n) for n in range(i, i + 500)])
    assert ok(run("redrive", "q-dead", "q", "--count", "3")) == 3
    assert ok(run("redrive", "q-dead", "q")) == 2497
    assert ok(run("redrive", "q-dead", "q")) == 0
    assert r.zcard(f"{ns}:q") == 2500
    assert client.pop_message("q").message == "0"
    refused(
        run("redrive", "q-dead", "nope"),
        "queueNotFound",
        "Queue not found",
        detail="no queue 'nope'",
    )
    refused(
        run("redrive", "q-dead", "q", "--count", "0"), "invalidValue", "count must be", detail=True
    )


def test_purge_more_than_one_batch(run, r, ns, client):
    ok(run("create", "q"))
    for _ in range(3):
        client.send_messages("q", ["m"] * 1000)
    client.send_message("q", "m")
    assert ok(run("purge", "q")) == 3001
    assert r.zcard(f"{ns}:q") == 0


# Errors ----------------------------------------------------------------------------------------

SOME_ID = "a" * 32
VT_RANGE = "vt must be between 0 and 9999999"
DELAY_RANGE = "delay must be between 0 and 9999999"
MAXSIZE_RANGE = "maxsize must be between 1024 and 65536"


@pytest.mark.parametrize(
    "argv",
    [
        ["attributes", "nope"],
        ["set", "nope", "--vt", "1"],
        ["send", "nope", "x"],
        ["send", "nope", "--batch"],
        ["receive", "nope"],
        ["receive", "nope", "--count", "3"],
        ["pop", "nope"],
        ["delete", "nope", SOME_ID],
        ["visibility", "nope", SOME_ID, "1"],
        ["delete-queue", "nope"],
        ["purge", "nope"],
    ],
)
def test_queue_not_found(run, argv):
    refused(run(*argv, stdin=b"line\n"), "queueNotFound", "Queue not found")


def test_empty_batch_to_a_missing_queue_is_refused(run):
    refused(run("send", "nope", "--batch", stdin=b""), "queueNotFound", "Queue not found")


BAD_ID = "a message id is 32 of a-z, A-Z, 0-9 and : (got 'bad-id')"
QNAME_RULE = "a queue name is 1 to 160 of a-z, A-Z, 0-9, _ and - (got {!r})"
QUEUES_RESERVED = (
    "'QUEUES' is reserved: its messages would be stored at {ns}:QUEUES, the key of the index "
    "of queue names"
)


@pytest.mark.parametrize(
    ("argv", "name", "message", "detail"),
    [
        (
            ["create", "bad name"],
            "invalidFormat",
            "Invalid qname format",
            QNAME_RULE.format("bad name"),
        ),
        (
            ["create", "q" * 161],
            "invalidFormat",
            "Invalid qname format",
            QNAME_RULE.format("q" * 161),
        ),
        (["create", ""], "missingParameter", "No qname supplied", False),
        (["attributes", "a.b"], "invalidFormat", "Invalid qname format", QNAME_RULE.format("a.b")),
        (["create", "QUEUES"], "invalidFormat", "Invalid qname format", QUEUES_RESERVED),
        (["delete-queue", "QUEUES"], "invalidFormat", "Invalid qname format", QUEUES_RESERVED),
        (["create", "q", "--vt", "-1"], "invalidValue", VT_RANGE, "got -1"),
        (["create", "q", "--delay", "10000000"], "invalidValue", DELAY_RANGE, "got 10000000"),
        (["create", "q", "--maxsize", "100"], "invalidValue", MAXSIZE_RANGE, "got 100"),
        (["set", "q", "--maxsize", "70000"], "invalidValue", MAXSIZE_RANGE, "got 70000"),
        (["receive", "q", "--vt", "10000000"], "invalidValue", VT_RANGE, "got 10000000"),
        (
            ["receive", "q", "--count", "0"],
            "invalidValue",
            "count must be between 1 and 1000",
            "got 0",
        ),
        (["send", "q", "x", "--delay", "-5"], "invalidValue", DELAY_RANGE, "got -5"),
        (
            ["visibility", "q", "short", "1"],
            "invalidFormat",
            "Invalid id format",
            "a message id is 32 of a-z, A-Z, 0-9 and : (got 'short')",
        ),
        (["visibility", "q", SOME_ID, "-1"], "invalidValue", VT_RANGE, "got -1"),
    ],
)
def test_invalid_arguments_are_refused(run, r, ns, argv, name, message, detail):
    refused(run(*argv), name, message, detail=detail)
    assert r.keys(f"{ns}:*") == []


def test_batch_over_the_limit_is_refused_whole(run, r, ns):
    ok(run("create", "q"))
    result = run("send", "q", "--batch", stdin=b"m\n" * 1001)
    refused(result, "invalidValue", "at most 1000 messages go in one batch (got 1001)")
    assert r.zcard(f"{ns}:q") == 0


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["create"],
        ["send", "q"],
        ["send", "q", "x", "--batch"],
        ["send", "q", "x", "y"],
        ["receive", "q", "--vt", "soon"],
        ["receive", "q", "--count"],
        ["delete", "q"],
        ["visibility", "q", SOME_ID],
        ["visibility", "q", SOME_ID, "1.5"],
        ["list", "--bogus"],
    ],
)
def test_usage_errors_exit_2(run, capsys, argv):
    with pytest.raises(SystemExit) as exc:
        run(*argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "usage: rsmq" in err and "error:" in err


def test_a_redis_error_is_reported(run, r, ns):
    ok(run("create", "q"))
    r.set(f"{ns}:q", "not a sorted set")
    result = run("receive", "q")
    assert result.code == 1 and result.out == ""
    assert result.err.startswith("rsmq: ResponseError: ") and "WRONGTYPE" in result.err


# Connection and URL ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://:secret@127.0.0.1:1/0",
        "redis://user:secret@127.0.0.1:1/0",
        "redis://127.0.0.1:1/0?password=secret",
        "redis://:s%65cret@127.0.0.1:1/0",
    ],
)
def test_unreachable_redis_exits_3_without_the_password(run, url):
    result = run("list", url=url)
    assert result.code == 3 and result.out == ""
    assert result.err.startswith(f"rsmq: cannot connect to Redis at {mask_url(url)}: ")
    assert "127.0.0.1:1" in result.err and "***" in result.err
    assert "secret" not in result.err and "s%65cret" not in result.err


def test_wrong_password_exits_3_without_it(run, r, ns, redis_url):
    # A user of the test's own (the server's default user needs no password).
    r.acl_setuser(ns, enabled=True, passwords=["+right"], commands=["+@all"], keys=["*"])
    try:
        url = redis_url.replace("redis://", f"redis://{ns}:secret@")
        result = run("list", url=url)
        assert result.code == 3, result
        assert result.err.startswith(f"rsmq: cannot connect to Redis at {mask_url(url)}: ")
        assert "secret" not in result.err + result.out
        assert ok(run("list", url=url.replace(":secret@", ":right@"))) == []
    finally:
        r.acl_deluser(ns)


def test_invalid_url_is_a_usage_error(run):
    result = run("list", url="http://:secret@127.0.0.1:1/0")
    assert result.code == 2 and result.out == ""
    assert result.err == (
        "rsmq: bad setting: --url='http://:***@127.0.0.1:1/0' has the scheme 'http': "
        "use redis://, rediss:// (TLS), redis+sentinel:// or unix://\n"
    )
    assert "secret" not in result.err


def test_mask_url():
    assert mask_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
    assert mask_url("redis://u:p@h:1/2") == "redis://u:***@h:1/2"
    assert mask_url("rediss://:p@h/0?password=x&db=1") == "rediss://:***@h/0?password=***&db=1"
    assert mask_url("redis://u@h") == "redis://u@h"
    assert mask_url("redis://:p@[::1") == "<unparsable URL>"


def test_url_comes_from_the_environment_and_the_option_wins(run, monkeypatch, redis_url):
    ok(run("create", "q"))
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert ok(run("list", url=None)) == ["q"]
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert run("list", url=None).code == 3
    assert ok(run("list", url=redis_url)) == ["q"]


def test_global_options_also_work_after_the_command(run, capsys, redis_url, ns):
    ok(run("create", "q"))
    assert main(["list", "--url", redis_url, "--ns", ns, "--pretty"]) == 0
    assert capsys.readouterr().out == '[\n  "q"\n]\n'
    assert main(["--ns", "elsewhere", "list", "--url", redis_url, "--ns", ns]) == 0
    assert capsys.readouterr().out == '["q"]\n'


def test_empty_namespace_is_refused(run):
    refused(run("--ns", "", "list"), "invalidFormat", "Invalid ns format", detail=True)


def test_pretty_indents(run):
    ok(run("create", "q"))
    result = run("--pretty", "attributes", "q")
    assert result.out.startswith('{\n  "vt": 30,\n')


# The installed program -------------------------------------------------------------------------


def test_console_script_is_declared_for_main():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["rsmq"].partition(":")
    assert getattr(importlib.import_module(module), attr) is main


def _installed_rsmq() -> list[str]:
    """The installed console script, else the module run as a program (without ``pip install``)."""
    script = Path(sys.executable).parent / "rsmq"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rsmq_core"]


def _run_program(
    program: list[str], *argv: str, stdin: str = "", url: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("REDIS_URL", None)
    env.update({"REDIS_URL": url} if url else {})
    return subprocess.run(
        [*program, *argv], input=stdin, env=env, capture_output=True, text=True, timeout=30
    )


def test_installed_program_round_trip(redis_url, ns, r):
    def rsmq(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return _run_program(_installed_rsmq(), "--ns", ns, *argv, stdin=stdin, url=redis_url)

    assert rsmq("create", "q").stdout == "true\n"
    sent = rsmq("send", "q", "-", stdin="from stdin\n")
    assert sent.returncode == 0, sent.stderr
    assert r.hget(f"{ns}:q:Q", json.loads(sent.stdout)) == "from stdin\n"
    assert json.loads(rsmq("pop", "q").stdout)["message"] == "from stdin\n"
    empty = rsmq("pop", "q")
    assert (empty.returncode, empty.stdout) == (0, "null\n")
    missing = rsmq("attributes", "nope")
    assert (missing.returncode, missing.stderr) == (1, "rsmq: queueNotFound: Queue not found\n")
    assert rsmq("send", "q").returncode == 2


def test_python_m_rsmq_core_masks_the_password():
    url = "redis://:secret@127.0.0.1:1/0"
    down = _run_program([sys.executable, "-m", "rsmq_core"], "--url", url, "list")
    assert (down.returncode, down.stdout) == (3, "")
    assert down.stderr.startswith("rsmq: cannot connect to Redis at redis://:***@127.0.0.1:1/0: ")
    assert "secret" not in down.stderr
