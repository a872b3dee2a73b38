#!/usr/bin/env python3
"""Mutation testing, on demand (not in CI): do the tests fail when the code is wrong?

Puts one small deliberate bug (a mutant) at a time into worker/, realtime/ or rsmq_core/ and
runs that package's fast tests against it: a mutant the tests fail on is killed, one they pass
is a survivor (a behaviour nothing pins, or an equivalent change). Mutants:

  compare   <  <=  >  >=  ==  !=  in  not in  is  is not   (each flipped to its neighbour)
  number    an int or float constant n becomes n + 1 (0.5 becomes 1.5)
  boolop    and <-> or
  not       `not x` becomes `x`
  arith     + <-> -, * <-> /, // -> /
  bool      True <-> False
  drop      a statement (an expression call, an assignment) becomes `pass`

Log calls, docstrings and string constants are left alone (what a log line says is tested
where it matters, by the process tests). Each run is sampled: every candidate is listed, and
``--per-package`` of them (seeded by ``--seed``) are run, so a run takes minutes, not hours,
on a small machine. The tree is copied to a temporary directory first: the working tree is
never touched, and an interrupted run leaves nothing behind.

    .venv/bin/python scripts/mutate.py                    # 40 per package, seed 18
    .venv/bin/python scripts/mutate.py --package worker --per-package 10 --seed 1
    .venv/bin/python scripts/mutate.py --list             # the sample, without running it
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What is mutated, and the fast tests that pin it (no worker processes: seconds a run).
PACKAGES: dict[str, tuple[list[str], list[str]]] = {
    "rsmq_core": (
        [
            "rsmq_core/_batch.py",
            "rsmq_core/_protocol.py",
            "rsmq_core/client.py",
            "rsmq_core/sync.py",
            "rsmq_core/models.py",
        ],
        [
            "tests/test_queue.py",
            "tests/test_validation.py",
            "tests/test_async.py",
            "tests/test_protocol.py",
            "tests/test_model.py",
        ],
    ),
    "realtime": (
        [
            "realtime/subscriber.py",
            "realtime/backoff.py",
            "realtime/events.py",
            "realtime/registry.py",
        ],
        ["tests/test_realtime.py", "tests/test_worker_inproc.py"],
    ),
    "worker": (
        ["worker/worker.py", "worker/job.py"],
        ["tests/test_worker_inproc.py", "tests/test_worker_limits.py"],
    ),
}

COMPARE_FLIP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
ARITH_FLIP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
}


@dataclass(frozen=True)
class Mutant:
    path: str
    index: int  # the n-th candidate of the file, in ast.walk order: stable for a given file
    line: int
    kind: str
    before: str
    after: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} [{self.kind}] {self.before}  ->  {self.after}"


def _is_log_call(node: ast.stmt) -> bool:
    if not isinstance(node, ast.Expr) or not isinstance(node.value, ast.Call):
        return False
    func = node.value.func
    return (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and (func.value.id in ("log", "logging", "logger"))
    )


def _docstrings(tree: ast.Module) -> set[int]:
    """Every string standing as a statement: docstrings, and the strings documenting names."""
    return {
        id(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def _mutations(node: ast.AST, skip: set[int]) -> Iterator[tuple[str, ast.AST]]:
    """Each mutated copy of ``node`` (the node itself, changed; not its children)."""
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in COMPARE_FLIP:
                new = copy.deepcopy(node)
                new.ops[i] = COMPARE_FLIP[type(op)]()
                yield "compare", new
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
        yield "number", ast.Constant(node.value + 1)
    elif isinstance(node, ast.Constant) and type(node.value) is bool:
        yield "bool", ast.Constant(not node.value)
    elif isinstance(node, ast.BoolOp):
        yield (
            "boolop",
            ast.BoolOp(
                ast.Or() if isinstance(node.op, ast.And) else ast.And(), copy.deepcopy(node.values)
            ),
        )
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "not", copy.deepcopy(node.operand)
    elif isinstance(node, ast.BinOp) and type(node.op) in ARITH_FLIP:
        new = copy.deepcopy(node)
        new.op = ARITH_FLIP[type(node.op)]()
        yield "arith", new
    elif (
        isinstance(node, ast.Expr | ast.Assign | ast.AugAssign | ast.AnnAssign)
        and id(node) not in skip
        and not _is_log_call(node)
        and not (isinstance(node, ast.AnnAssign) and node.value is None)
    ):
        yield "drop", ast.Pass()


def _candidates(path: str) -> list[tuple[Mutant, ast.Module, ast.AST, ast.AST]]:
    """Every mutant of one file: the mutant, the module, the node and what replaces it."""
    source = (ROOT / path).read_text()
    tree = ast.parse(source)
    skip = _docstrings(tree)
    # Annotations are left alone: mutating them tests nothing.
    for node in ast.walk(tree):
        for sub in (getattr(node, "annotation", None), getattr(node, "returns", None)):
            if sub is not None:
                skip.update(id(n) for n in ast.walk(sub))
    out = []
    for node in ast.walk(tree):
        if id(node) in skip or isinstance(node, ast.JoinedStr | ast.FormattedValue):
            continue
        for kind, new in _mutations(node, skip):
            line = getattr(node, "lineno", 0)
            mutant = Mutant(path, len(out), line, kind, _short(node), _short(new))
            out.append((mutant, tree, node, new))
    return out


def _short(node: ast.AST) -> str:
    text = ast.unparse(node).replace("\n", " ")
    return text if len(text) <= 70 else text[:67] + "..."


def _replace(tree: ast.Module, old: ast.AST, new: ast.AST) -> ast.Module | None:
    """A copy of ``tree`` with ``old`` replaced by ``new`` (None if it is nowhere to be put)."""

    class Swap(ast.NodeTransformer):
        done = False

        def generic_visit(self, node: ast.AST) -> ast.AST:
            if node is old:
                self.done = True
                return ast.copy_location(new, old)
            return super().generic_visit(node)

    # Transform a shallow-structure copy: the original stays intact for the next mutant.
    swap = Swap()
    result = swap.visit(_clone(tree, old))
    if not swap.done:
        return None
    ast.fix_missing_locations(result)
    return result if isinstance(result, ast.Module) else None


def _clone(tree: ast.Module, keep: ast.AST) -> ast.Module:
    """A deep copy of ``tree`` in which ``keep`` is still the same object (to be found)."""
    memo = {id(keep): keep}
    return copy.deepcopy(tree, memo)


def sample(packages: list[str], per_package: int, seed: int) -> list[tuple[str, Mutant, str]]:
    """(package, mutant, mutated source) for the seeded sample of each package."""
    chosen = []
    for package in packages:
        files, _ = PACKAGES[package]
        every = [c for f in files for c in _candidates(f)]
        picked = random.Random(f"{seed}:{package}").sample(every, min(per_package, len(every)))
        picked.sort(key=lambda c: (c[0].path, c[0].line, c[0].index))
        for mutant, tree, node, new in picked:
            mutated = _replace(tree, node, new)
            if mutated is not None:
                chosen.append((package, mutant, ast.unparse(mutated)))
    return chosen


def copy_tree(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in listed:
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def run_tests(tree: Path, tests: list[str], timeout: float) -> tuple[bool, float]:
    """Whether the tests passed, and how long they took; a run past ``timeout`` fails."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    began = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its Redis and any worker go with it on a timeout
    )
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return False, time.monotonic() - began
    return rc == 0, time.monotonic() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--package", choices=sorted(PACKAGES), action="append")
    parser.add_argument("--per-package", type=int, default=40)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--list", action="store_true", help="print the sample and stop")
    args = parser.parse_args(argv)
    packages = args.package or list(PACKAGES)
    chosen = sample(packages, args.per_package, args.seed)
    if args.list:
        for package, mutant, _ in chosen:
            print(f"{package:10} {mutant}")
        return 0
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        where = subprocess.run(
            [sys.executable, "-c", "import worker, realtime, rsmq_core as m; print(m.__file__)"],
            cwd=tree,
            env={**os.environ, "PYTHONPATH": str(tree)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not where.startswith(str(tree)):
            print(
                f"the copy is not what gets imported ({where}): is the project installed "
                "other than editable?"
            )
            return 1
        killed: dict[str, list[Mutant]] = {p: [] for p in packages}
        survived: dict[str, list[Mutant]] = {p: [] for p in packages}
        for package in packages:
            _, tests = PACKAGES[package]
            ok, baseline = run_tests(tree, tests, timeout=600)
            if not ok:
                print(f"{package}: the tests fail without any mutant; fix that first")
                return 1
            print(f"{package}: tests pass unmutated in {baseline:.0f}s", flush=True)
            for pkg, mutant, source in chosen:
                if pkg != package:
                    continue
                target = tree / mutant.path
                original = target.read_text()
                target.write_text(source)
                try:
                    passed, took = run_tests(tree, tests, timeout=2 * baseline + 30)
                finally:
                    target.write_text(original)
                (survived if passed else killed)[package].append(mutant)
                print(
                    f"  {'SURVIVED' if passed else 'killed  '} {took:5.1f}s  {mutant}", flush=True
                )
        print("\npackage     killed  of  score")
        for package in packages:
            k, n = len(killed[package]), len(killed[package]) + len(survived[package])
            print(f"{package:10} {k:6d} {n:4d}  {100 * k / max(n, 1):4.0f}%")
        for package in packages:
            for mutant in survived[package]:
                print(f"survived: {mutant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
