"""The `rsmq` command line under hostile argv and stdin (hypothesis), in-process.

Whatever the arguments, it exits 0 with one JSON document on stdout, or 1 (refused: an RSMQ
error name and message) or 2 (usage) with one message on stderr naming the problem, and never
a traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rsmq_core import RSMQ
from rsmq_core.cli import EXIT_ERROR, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, main

COMMANDS = [
    "create",
    "list",
    "attributes",
    "attrs",
    "set",
    "send",
    "receive",
    "pop",
    "delete",
    "visibility",
    "delete-queue",
    "purge",
    "redrive",
    "schedule",
    "nope",
    "",
]
FLAGS = ["--batch", "--pretty", "--realtime", "--no-realtime", "-", "--", "-h"]
VALUED = ["--vt", "--delay", "--maxsize", "--count", "--ns", "--every", "--cron", "--catch-up"]
values = st.one_of(
    st.sampled_from(["q", "dead", "missing", "a" * 32, "0", "5", "-1", "1024", "hello"]),
    st.sampled_from(["a" * 161, "co:lon", "1.5", "1e3", "99999999999999999999", "", " "]),
    st.sampled_from(["é", "🎉", "\x00", "\ud800", "a" * 31]),
    st.text(max_size=10),
)
options = st.lists(st.tuples(st.sampled_from(VALUED), values), max_size=2).map(
    lambda pairs: [x for pair in pairs for x in pair]
)
flags = st.lists(st.sampled_from(FLAGS), max_size=1)
# How many positional arguments each command takes: shaped argvs reach Redis far more often.
SHAPES = {
    "create": 1,
    "list": 0,
    "attributes": 1,
    "attrs": 1,
    "set": 1,
    "send": 2,
    "receive": 1,
    "pop": 1,
    "delete": 2,
    "visibility": 3,
    "delete-queue": 1,
    "purge": 1,
    "redrive": 2,
    "schedule add": 3,
    "schedule list": 0,
    "schedule remove": 1,
}
shaped = (
    st.sampled_from(sorted(SHAPES))
    .flatmap(
        lambda c: st.tuples(
            st.just(c.split()), st.lists(values, min_size=SHAPES[c], max_size=SHAPES[c]), options
        )
    )
    .map(lambda t: [x for part in t for x in part])
)
free = st.tuples(st.sampled_from(COMMANDS), st.lists(values, max_size=3), options, flags).map(
    lambda t: [t[0], *t[1], *t[2], *t[3]]
)
BAD_URLS = ["notaurl", "redis://:pw@[::1", "http://127.0.0.1:1/0", "redis://127.0.0.1:1/0"]


@pytest.fixture
def prepared(redis_url: str, ns: str) -> Iterator[RSMQ]:
    with RSMQ.from_url(redis_url, ns=ns) as q:
        yield q


def run(argv: list[str], stdin: bytes) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse: usage errors and --help
                code = exc.code if isinstance(exc.code, int) else EXIT_USAGE
    finally:
        sys.stdin = saved
    return code, out.getvalue(), err.getvalue()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    args=shaped | free,
    stdin=st.binary(max_size=20) | st.text(max_size=20).map(str.encode),
    url=st.sampled_from([None, None, None, *BAD_URLS]),
)
def test_any_argv_exits_cleanly(prepared, redis_url, args, stdin, url):
    for name in prepared.list_queues():
        prepared.delete_queue(name)
    prepared.create_queue("q")
    prepared.create_queue("dead")
    prepared.send_message("q", "x")
    argv = ["--url", url or redis_url, "--ns", prepared.ns, *args]
    code, out, err = run(argv, stdin)
    event(f"exit {code}")
    assert "Traceback" not in out + err
    if code == EXIT_OK:
        if "-h" in args:
            assert out.startswith("usage:")
        else:
            json.loads(out)  # one JSON document
        return
    assert out == ""
    assert code in (EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE), (code, err)
    assert err.endswith("\n") and err.strip()
    # argparse prints its usage, then "rsmq [command]: error: ..."; ours is one "rsmq: ..."
    # line (an argument quoted in either may hold a line break of its own).
    assert re.search(r"^rsmq( [a-z-]+)*: ", err, re.MULTILINE), err
    if code == EXIT_ERROR:
        assert err.startswith("rsmq: ") and err.partition(": ")[2].strip(), err
    if code == EXIT_UNREACHABLE:
        assert url is not None and "pw" not in err
