"""What is printed at the end: msgs/s per row and operation next to Node RSMQ's 50-concurrent
figure, the targets against it, and the raw figures saved as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.core.measure import Row
from bench.core.runner import OPS
from bench.harness import aligned_table

OP_TITLES = {"send": "send", "recv_del": "receive+delete", "pop": "pop"}
REFERENCE = "node-conc"  # the row every ratio is taken against

# (row, op, factor): the row's figure must be at least factor x Node RSMQ's 50-concurrent one.
TARGETS = [
    ("async-conc", "send", 1.0),
    ("async-conc", "recv_del", 1.0),
    ("async-batch", "send", 3.0),
    ("async-batch", "recv_del", 3.0),
    ("async-batch", "pop", 3.0),
]


def fmt_rate(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:,.0f}"


def fmt_ratio(rate: float | None, ref: float | None) -> str:
    return "—" if rate is None or ref is None else f"{rate / ref:.2f}x"


def reference_rate(rows: Sequence[Row], op: str) -> float | None:
    reference = next((row for row in rows if row.key == REFERENCE), None)
    return reference.rate(op) if reference else None


def table(rows: Sequence[Row]) -> str:
    """A Markdown table: msgs/s per op, and the ratio to Node RSMQ's 50-concurrent figure."""
    header = ["client", "mode"]
    for op in OPS:
        header += [f"{OP_TITLES[op]} msgs/s", "vs Node 50"]
    lines = []
    for row in rows:
        cells = [row.client, row.mode]
        for op in OPS:
            rate = row.rate(op)
            cells += [fmt_rate(rate), fmt_ratio(rate, reference_rate(rows, op))]
        lines.append(cells)
    return aligned_table(header, lines, left=2)


def check_targets(rows: Sequence[Row]) -> list[dict[str, Any]]:
    by_key = {row.key: row for row in rows}
    results = []
    for key, op, factor in TARGETS:
        row = by_key[key]
        rate = row.rate(op)
        ref = reference_rate(rows, op)
        verdict = (
            "n/a" if rate is None or ref is None else "PASS" if rate >= factor * ref else "MISS"
        )
        results.append(
            {
                "row": key,
                "op": op,
                "factor": factor,
                "what": f"{row.client} {row.mode} {OP_TITLES[op]} >= {factor:g}x Node",
                "msgs_per_s": rate,
                "node_msgs_per_s": ref,
                "verdict": verdict,
            }
        )
    return results


def print_targets(targets: list[dict[str, Any]]) -> None:
    print("targets (against Node RSMQ, 50 concurrent, in this run):")
    for t in targets:
        detail = ""
        if t["verdict"] != "n/a":
            ratio = t["msgs_per_s"] / t["node_msgs_per_s"]
            detail = (
                f": {t['msgs_per_s']:,.0f} vs {t['node_msgs_per_s']:,.0f} msgs/s ({ratio:.2f}x)"
            )
        print(f"  {t['verdict']:4}  {t['what']}{detail}")


def raw_figures(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Every row's every operation, each round's seconds and rate, for the JSON file."""
    return [
        {
            "row": row.key,
            "client": row.client,
            "mode": row.mode,
            "op": op,
            "messages": row.n,
            "seconds_per_round": row.seconds[op],
            "msgs_per_s_per_round": [row.n / s for s in row.seconds[op]],
            "msgs_per_s_best": row.rate(op),
        }
        for row in rows
        for op in row.seconds
    ]
