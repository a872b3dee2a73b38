"""Logs as Heroku wants them: one line per event, on stdout, from the real processes."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from rsmq_core import RSMQ
from rsmq_core.logs import OneLineFormatter, config
from support.web import ROOT, WebProcess
from support.workers import WorkerProcess, wait_for
from tests.handlers import done

LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) [\w.]+: +\S.*")


def assert_one_event_per_line(text: str) -> list[str]:
    lines = text.splitlines()
    assert lines, "no log lines"
    for line in lines:
        assert LINE.fullmatch(line), f"not a log line of its own: {line!r}"
    return lines


def test_a_traceback_and_line_breaks_stay_on_one_line():
    try:
        raise ValueError("first\nsecond")
    except ValueError:
        record = logging.LogRecord(
            "x.y", logging.ERROR, __file__, 1, "bad\r\nthing %s", ("a\nb",), sys.exc_info()
        )
    text = OneLineFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert "\n" not in text and "\r" not in text
    assert text.startswith("ERROR x.y: bad\\nthing a\\nb\\nTraceback (most recent call last):")
    assert text.endswith("ValueError: first\\nsecond")


def test_uvicorn_loggers_go_to_the_root_handler():
    loggers = config("WARNING")["loggers"]
    assert {n: v["propagate"] for n, v in loggers.items()} == {
        "uvicorn": True,
        "uvicorn.error": True,
        "uvicorn.access": True,
    }


def test_a_real_workers_stdout_is_one_line_per_event(redis_url, ns, r):
    with RSMQ.from_url(redis_url, ns=ns, realtime=True) as q:
        q.create_queue("jobs")
        worker = WorkerProcess(redis_url, ns, max_receives=1).start()
        try:
            good = q.send_message("jobs", "{}")
            bad = q.send_message("jobs", json.dumps({"fail": "line one\nline two"}))
            wait_for(lambda: [d["id"] for d in done(r, ns)] == [good], what="the good one done")
            wait_for(lambda: r.zcard(f"{ns}:jobs-dead") == 1, what="the bad one dead-lettered")
            assert worker.stop() == 0
            lines = assert_one_event_per_line(worker.stdout())
            assert worker.stderr() == ""
        finally:
            worker.cleanup()
    text = "\n".join(lines)
    assert " INFO worker.worker: worker " in text and " starting: realtime mode" in text
    assert re.search(rf"INFO worker.worker: +\d+\.\d+s done jobs/{good} rc=1$", text, re.M)
    assert f"dead-lettered jobs/{bad} rc=1 to jobs-dead/" in text
    assert "RuntimeError: line one\\nline two (rc=1)" in text
    assert " stopped: <Worker realtime done=1" in text


def test_the_web_process_logs_to_stdout_one_line_per_event(redis_url, ns):
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        web = WebProcess(redis_url, ns, stdout=out, stderr=err, LOG_LEVEL="INFO")
        with urllib.request.urlopen(web.url("/api/health"), timeout=5) as answer:
            assert answer.status == 200
        web.stop()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    assert stderr == ""
    text = "\n".join(assert_one_event_per_line(stdout))
    assert f"INFO uvicorn.error: Uvicorn running on http://127.0.0.1:{web.port}" in text
    assert '"GET /api/health HTTP/1.1" 200' in text
    assert "INFO uvicorn.error: Finished server process" in text


def run_module(module: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_web_process_refuses_a_bad_port_naming_it():
    result = run_module("web", PORT="http")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "web: bad setting: PORT='http' must be a port number, 1 to 65535\n"


def test_a_bad_log_level_is_named():
    for module in ("web", "worker"):
        result = run_module(module, LOG_LEVEL="loud", HANDLER="worker.example:handle")
        assert result.returncode == 2
        assert "LOG_LEVEL='loud': use one of DEBUG, INFO, WARNING, ERROR, CRITICAL" in (
            result.stderr
        )


def test_the_procfile_runs_both_processes_by_module():
    procfile = (ROOT / "Procfile").read_text().splitlines()
    # The worker has no default HANDLER: the Procfile names the example app's, unless the
    # app's config sets another.
    worker = "worker: HANDLER=${HANDLER:-worker.example:handle} python -m worker"
    assert procfile == ["web: python -m web", worker]
    assert Path(ROOT / "web" / "__main__.py").is_file()
