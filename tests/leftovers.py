"""A pytest plugin: the run fails if a test left a process running (a worker, a web app, a
redis-server...), and the processes left are killed, so none outlives the run.

Loaded by tests/conftest.py. On Linux the pytest process is made a "child subreaper": a
process whose parent died (a worker started by a killed launcher, say) becomes pytest's child
instead of init's, so it is found too. Elsewhere the check is skipped.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

import pytest

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
PROC = Path("/proc")


def pytest_configure(config: pytest.Config) -> None:
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def descendants(root: int) -> list[int]:
    """The live processes below ``root`` (zombies, already ended, are not counted)."""
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        # The command name, in parentheses, may hold anything: the fields follow the last ")".
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if state != "Z":
            parents[int(entry.name)] = int(ppid)
    found: list[int] = []
    below = [root]
    while below:
        parent = below.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        below += children
    return found


def command_line(pid: int) -> str:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def reap() -> None:
    """Collect the exit of every child that ended: orphans handed to us are nobody else's."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if sys.platform != "linux":
        return
    left = [(pid, command_line(pid)) for pid in descendants(os.getpid())]
    if not left:
        return
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    reap()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "processes left running by the tests (killed now)", red=True)
        for pid, command in left:
            reporter.write_line(f"{pid} {command}")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
