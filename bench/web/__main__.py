"""``python -m bench.web``: starts the run's processes, runs the parts asked for, prints the
report (and saves the raw figures as JSON when asked)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from importlib import metadata
from typing import Any

import redis

import bench.web
from bench.harness import Deadline, arguments, exit_on_sigterm, machine
from bench.web import browser, burst, fanout, http_load
from bench.web.common import LOAD_QUEUE, NS, Plan, Run, WebServer, log_problems
from rsmq_core import RSMQ
from rsmq_core.embedded import EmbeddedRedis
from support.workers import WorkerProcess

# The parts, by their --only names, in the order they run.
PARTS: dict[str, Callable[[Run], Awaitable[dict[str, Any]]]] = {
    "browser": browser.run,
    "http": http_load.run,
    "fanout": fanout.run,
    "burst": burst.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = arguments("python -m bench.web", bench.web.__doc__, "a smaller run (under a minute)")
    parser.add_argument("--only", choices=list(PARTS), help="run one part")
    args = parser.parse_args(argv)
    plan = Plan.make(args.quick)
    exit_on_sigterm()
    deadline = Deadline(plan.budget_seconds)
    info = {**machine(), **versions()}
    kind = "quick" if args.quick else "full"
    print(f"web benchmark ({kind} run), time budget {plan.budget_seconds:.0f} s", flush=True)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        server = EmbeddedRedis()
        stack.callback(server.cleanup)
        server.start()
        r = redis.Redis.from_url(server.url, socket_timeout=10)
        stack.callback(r.close)
        r.execute_command("CONFIG", "SET", "maxclients", "10000")
        web = WebServer(server.url, NS)
        stack.callback(web.cleanup)
        web.wait_ready()
        worker = WorkerProcess(server.url, NS, handler="bench.handlers:noop", log_level="WARNING")
        stack.callback(worker.cleanup)
        worker.start(ready=False)
        worker.wait_ready(timeout=20)
        with RSMQ.from_url(server.url, ns=NS) as q:
            q.create_queue(LOAD_QUEUE)
        helpers = [worker.pid, server.proc.pid if server.proc is not None else -1]
        ctx = Run(server, r, web, helpers, plan, deadline)
        results = asyncio.run(run(ctx, args.only))
    info["loadavg_end"] = os.getloadavg()
    info["seconds"] = time.monotonic() - started
    print()
    print(report(info, results))
    if args.json is not None:
        data = {"machine": info, "plan": asdict(plan), **results}
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nraw figures: {args.json}")
    return 0


def versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in ("uvicorn", "starlette", "websockets", "h11")}


async def run(ctx: Run, only: str | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, part in PARTS.items():
        if name == "fanout":
            # What the run's web process logged in parts 1 and 2 (3 and 4 start their own)
            results["web_log"] = log_problems(ctx.web.output().splitlines())
        if only in (None, name):
            results.update(await part(ctx))
    return results


def report(info: dict[str, Any], results: dict[str, Any]) -> str:
    out = [
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['platform']}, "
        f"Redis {info['redis']}, Python {info['python']}, uvicorn {info['uvicorn']}, "
        f"starlette {info['starlette']}, websockets {info['websockets']}, "
        f"redis-py {info['redis_py']}"
    ]
    if (b := results.get("browser")) is not None:
        out += browser.report(b)
    if (h := results.get("http")) is not None:
        out += http_load.report(h, results.get("http_bare"))
    if fans := results.get("fanout"):
        out += fanout.report(fans)
    if (u := results.get("burst")) is not None:
        out += burst.report(u)
    if (log := results.get("web_log")) and log["errors"]:
        out += [
            "",
            f"Web process of parts 1 and 2: {log['errors']} errors logged: {log['exceptions']}",
        ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
