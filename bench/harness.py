"""What every benchmark here shares: the run's time budget, pacing, percentiles, CPU time
from /proc, the machine's description, Markdown tables, a SIGTERM that unwinds like
Ctrl-C so that every process a benchmark started is stopped, Redis's command counts, the
options every benchmark takes (--quick, --json), the JSON file of raw figures, and a quiet
web process of any source tree."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import redis

from rsmq_core.embedded import EmbeddedRedis
from support.web import WebProcess

T = TypeVar("T")


class BenchError(RuntimeError):
    """Something did not happen in time, or did not add up."""


class Deadline:
    """The whole run's time budget: every wait is cut to what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def until(
        self, predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.01
    ) -> T:
        """Poll ``predicate`` until it returns something true; BenchError after ``timeout``."""
        limit = time.monotonic() + min(timeout, max(0.0, self.left()))
        for _ in range(int(timeout / interval) + 2):
            value = predicate()
            if value:
                return value
            if time.monotonic() > limit:
                break
            time.sleep(interval)
        over = " (the run's time budget is spent)" if self.left() <= 0 else ""
        raise BenchError(f"timed out after {timeout:.1f}s waiting for {what}{over}")

    async def until_async(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        """``until`` on an asyncio loop: the loop's other tasks run while it polls."""
        limit = time.monotonic() + min(timeout, max(0.0, self.left()))
        while not predicate():
            if time.monotonic() > limit:
                over = " (the run's time budget is spent)" if self.left() <= 0 else ""
                raise BenchError(f"timed out after {timeout:.1f}s waiting for {what}{over}")
            await asyncio.sleep(0.01)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time the processes have used so far (Linux /proc; 0 elsewhere)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def vm_kb(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of the process from /proc (kB), 0 when /proc cannot tell."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def quiet_web(redis_url: str, ns: str, root: Path, **settings: Any) -> WebProcess:
    """``python -m web`` from the source tree ``root`` (this one, or an older checkout to
    compare), with the app's default settings but for ``settings``, once it answers."""
    # Its output is not the measure (an older tree logs a traceback per failed request).
    null = subprocess.DEVNULL
    return WebProcess(
        redis_url,
        ns,
        root=root,
        stdout=null,
        stderr=null,
        keepalive=None,
        LOG_LEVEL="ERROR",
        **settings,
    )


def stopped(web: WebProcess, wait: float) -> float | None:
    """Seconds SIGTERM took to stop the web process; None if it had to be killed."""
    try:
        return web.stop(wait)
    except subprocess.TimeoutExpired:
        return None


def machine_cpu_seconds() -> float:
    """CPU time every process on the machine has used so far (Linux /proc/stat; 0 elsewhere)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle, iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    return 0.0


def pacing(rate: float, count: int, deadline: Deadline) -> Iterator[float]:
    """For message i of ``count``, the seconds to wait until it is due (start + i/rate by the
    monotonic clock); a sender that falls far behind, or past the deadline, is an error."""
    start = time.monotonic()
    limit = start + 2 * count / rate + 5
    for i in range(count):
        now = time.monotonic()
        if now > limit or deadline.left() <= 0:
            raise BenchError(f"the sender fell behind: {i} of {count} sent")
        yield max(0.0, start + i / rate - now)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of a list of durations in seconds, in milliseconds."""
    values = sorted(seconds)
    return {
        "p50_ms": percentile(values, 0.50) * 1000,
        "p99_ms": percentile(values, 0.99) * 1000,
        "max_ms": (values[-1] if values else float("nan")) * 1000,
    }


def cpu_model(unknown: str = "?") -> str:
    """The CPU's model name (Linux /proc/cpuinfo), ``unknown`` elsewhere."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return unknown


def machine() -> dict[str, Any]:
    cpu = cpu_model()
    server = EmbeddedRedis()
    server.start()
    try:
        with redis.Redis.from_url(server.url) as r:
            redis_version = r.info("server")["redis_version"]
    finally:
        server.cleanup()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "redis": redis_version,
        "python": platform.python_version(),
        "redis_py": metadata.version("redis"),
        "hiredis": metadata.version("hiredis"),
        "loadavg": os.getloadavg(),
    }


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return aligned_table(header, rows, left=1)


def aligned_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int) -> str:
    """A Markdown table whose first ``left`` columns (names) are aligned left, the rest
    (figures) right."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        padded = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in pairs]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "| "
        + " | ".join("-" * w if i < left else "-" * (w - 1) + ":" for i, w in enumerate(widths))
        + " |"
    )
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every process started here is still stopped."""

    def handler(signum: int, frame: object) -> NoReturn:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def timed(label: str) -> Iterator[None]:
    """Prints how long the block took, as each benchmark's progress lines do."""
    start = time.monotonic()
    yield
    print(f"   ({label}: {time.monotonic() - start:.0f} s)", flush=True)


class CpuWindow:
    """CPU seconds used, from the moment it is made, by each group of processes it is given
    and by the whole machine, which is shared: what the groups do not account for is other
    people's."""

    def __init__(self, *groups: Sequence[int]) -> None:
        self.groups = groups
        self.start = self.sample()

    def sample(self) -> tuple[float, ...]:
        return (*(cpu_seconds(group) for group in self.groups), machine_cpu_seconds())

    def used(self) -> tuple[float, ...]:
        """Each group's CPU seconds since the start, then the machine's."""
        return tuple(b - a for a, b in zip(self.start, self.sample(), strict=True))


def commandstats(r: redis.Redis) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT (or the server's start)."""
    stats: dict[str, Any] = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def stats_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The commands whose counts changed, and by how much."""
    names = set(before) | set(after)
    delta = {n: after.get(n, 0) - before.get(n, 0) for n in names}
    return {n: d for n, d in sorted(delta.items()) if d}


def arguments(prog: str, doc: str | None, quick: str) -> argparse.ArgumentParser:
    """A parser with the options every benchmark takes, --quick (``quick`` says what it does)
    and --json; its description is the first line of ``doc``, the benchmark's docstring."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--json", type=Path, metavar="PATH", help="save the raw figures as JSON")
    return parser


def save_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
