"""What the run prints at the end: the machine, the latency and idle-cost table, receive calls
per handled message, throughput, and the targets with their verdicts."""

from __future__ import annotations

from typing import Any

from bench.harness import table
from bench.workers.plan import HEARTBEAT, RATE

TARGET_P50_MS = 2.0
TARGET_P99_MS = 15.0
TARGET_IDLE_RECEIVES = 0.0
TARGET_RECEIVES_PER_MSG = 1.2
# CPUs used by processes not started here, during a load, above which the report says so.
OTHERS_BUSY_WARNING = 0.25


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rt = next(r for r in results if r["config"]["realtime"])
    one = next(x for x in rt["loads"] if x["workers"] == 1)
    eight = next((x for x in rt["loads"] if x["workers"] == 8), None)
    checks = [
        (
            "realtime latency p50 <= 2 ms (1 worker, 200 msgs/s)",
            f"{one['p50_ms']:.2f} ms",
            one["p50_ms"] <= TARGET_P50_MS,
        ),
        (
            "realtime latency p99 <= 15 ms (1 worker, 200 msgs/s)",
            f"{one['p99_ms']:.2f} ms",
            one["p99_ms"] <= TARGET_P99_MS,
        ),
        (
            "realtime: 0 receive calls per idle second",
            f"{rt['idle']['evalsha_per_s']:.2f}/s",
            rt["idle"]["evalsha_per_s"] <= TARGET_IDLE_RECEIVES
            and rt["idle"]["counted_receives_per_s"] <= TARGET_IDLE_RECEIVES,
        ),
    ]
    if eight is not None:
        checks.append(
            (
                "realtime: <= 1.2 receive calls per handled message, 8 workers",
                f"{eight['receives_per_msg']:.2f}",
                eight["receives_per_msg"] <= TARGET_RECEIVES_PER_MSG,
            )
        )
    return [{"target": t, "measured": m, "pass": ok} for t, m, ok in checks]


def report(info: dict[str, Any], results: list[dict[str, Any]], tp: list[dict[str, Any]]) -> str:
    out = [
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['platform']}, "
        f"Redis {info['redis']}, Python {info['python']}, redis-py {info['redis_py']}, "
        f"hiredis {info['hiredis']}"
    ]
    if results:
        out += latency_table(results) + receives_table(results)
    if tp:
        out += throughput_table(tp)
    if results:
        out += targets_table(results) + busy_note(results)
    return "\n".join(out)


def latency_table(results: list[dict[str, Any]]) -> list[str]:
    header = [
        "configuration",
        "p50 ms",
        "p99 ms",
        "max ms",
        "idle cmds/s/worker",
        "of which heartbeat",
        "idle EVALSHA/s/worker",
    ]
    rows = []
    for res in results:
        one, idle = res["loads"][0], res["idle"]
        rows.append(
            [
                res["config"]["name"],
                f"{one['p50_ms']:.2f}",
                f"{one['p99_ms']:.2f}",
                f"{one['max_ms']:.1f}",
                f"{idle['commands_per_s_per_worker']:.2f}",
                f"{idle['heartbeat_per_s_per_worker']:.2f}",
                f"{idle['evalsha_per_s_per_worker']:.2f}",
            ]
        )
    title = (
        f"Latency and idle cost: 1 worker, {RATE:.0f} msgs/s (send -> handler start); idle: "
        f"{results[0]['idle']['workers']} workers, HEARTBEAT={HEARTBEAT}"
    )
    return ["", title, "", table(header, rows)]


def receives_table(results: list[dict[str, Any]]) -> list[str]:
    header = [
        "configuration",
        "workers",
        "sent/s",
        "p50 ms",
        "p99 ms",
        "receive calls/msg",
        "empty receives/msg",
        "worker scripts/msg",
        "worker CPU ms/msg",
        "Redis CPU ms/msg",
        "CPUs busy",
        "others' CPUs",
    ]
    rows = [
        [
            res["config"]["name"],
            str(x["workers"]),
            f"{x['send_rate']:.0f}",
            f"{x['p50_ms']:.2f}",
            f"{x['p99_ms']:.2f}",
            f"{x['receives_per_msg']:.2f}",
            f"{x['empty_per_msg']:.2f}",
            f"{x['scripts_per_msg']:.2f}",
            f"{x['worker_cpu_ms_per_msg']:.2f}",
            f"{x['redis_cpu_ms_per_msg']:.3f}",
            f"{x['machine_cpus_busy']:.2f}",
            f"{x['others_cpus_busy']:.2f}",
        ]
        for res in results
        for x in res["loads"]
    ]
    title = f"Receive calls per handled message at {RATE:.0f} msgs/s"
    return ["", title, "", table(header, rows)]


def throughput_table(tp: list[dict[str, Any]]) -> list[str]:
    header = [
        "CONCURRENCY",
        "messages",
        "seconds",
        "msgs/s",
        "worker CPU",
        "worker CPU-s per 1,000",
        "Redis CPU",
        "CPUs busy",
    ]
    rows = [
        [
            str(t["concurrency"]),
            f"{t['messages']:,}",
            f"{t['seconds']:.2f}",
            f"{t['msgs_per_s']:,.0f}",
            f"{t['worker_cpus']:.0%}",
            f"{t['worker_cpus'] / t['msgs_per_s'] * 1000:.3f}",
            f"{t['redis_cpus']:.0%}",
            f"{t['machine_cpus_busy']:.2f}",
        ]
        for t in tp
    ]
    return ["", "Throughput: 1 realtime worker, handler does nothing", "", table(header, rows)]


def targets_table(results: list[dict[str, Any]]) -> list[str]:
    rows = [[t["target"], t["measured"], "PASS" if t["pass"] else "MISS"] for t in targets(results)]
    return ["", "Targets", "", table(["target", "measured", "verdict"], rows)]


def busy_note(results: list[dict[str, Any]]) -> list[str]:
    """Which loads ran while other processes kept the machine busy: their latencies say less."""
    busy = [
        f"{res['config']['name']} x{x['workers']}: {x['others_cpus_busy']:.2f}"
        for res in results
        for x in res["loads"]
        if x["others_cpus_busy"] > OTHERS_BUSY_WARNING
    ]
    if not busy:
        return []
    note = "Note: other processes kept the machine busy during some loads (CPUs not ours)"
    return ["", f"{note}, so their latencies are less reliable: {', '.join(busy)}"]
