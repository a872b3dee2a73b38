"""One soak run: Redis with AOF, the proxy, the workers, a sender, and the faults on a schedule.

Every process is started here and stopped here (an ExitStack), whatever happens; every wait
has a deadline cut to the run's budget.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.harness import Deadline
from rsmq_core import RSMQ
from rsmq_core.embedded import EmbeddedRedis
from support.workers import WorkerProcess

from . import ledger, proxy
from .ledger import Fault, Life, Recovery, Send, Verdict

NS = "chaos"
QUEUE = "jobs"
OTHER_FAULTS = (ledger.REDIS_KILL, ledger.SCRIPT_FLUSH, ledger.CLIENT_KILL, ledger.PROXY_CUT)


@dataclass(frozen=True)
class Plan:
    """How big a soak, and how many of each fault. Worker kills come every ``kill_every``
    seconds; the other faults come one at a time halfway between two kills."""

    messages: int = 10_000
    workers: int = 4
    worker_kills: int = 10
    kill_every: float = 1.5
    redis_kills: int = 2
    script_flushes: int = 2
    client_kills: int = 2
    proxy_cuts: int = 2
    drop_rate: float = 0.05  # random drops per proxied connection per second
    latency_ms: float = 0.5
    jitter_ms: float = 2.0
    handler_ms: int = 10  # each message's handler sleeps a random 0..handler_ms
    vt: int = 3
    concurrency: int = 8
    poll_interval: float = 1.0
    tail: float = 3.0  # seconds the sender goes on after the last fault
    drain_timeout: float = 60.0
    budget: float = 300.0
    seed: int = 5

    def schedule(self) -> list[tuple[float, str]]:
        """(seconds after the start, fault kind), in order."""
        others = []
        counts = dict(
            zip(
                OTHER_FAULTS,
                (self.redis_kills, self.script_flushes, self.client_kills, self.proxy_cuts),
                strict=True,
            )
        )
        while any(counts.values()):
            for kind in OTHER_FAULTS:
                if counts[kind]:
                    counts[kind] -= 1
                    others.append(kind)
        kills = [ledger.WORKER_KILL] * self.worker_kills
        order: list[str] = []
        while kills or others:
            order += [kills.pop()] if kills else []
            order += [others.pop(0)] if others else []
        return [(1.0 + i * self.kill_every / 2, kind) for i, kind in enumerate(order)]

    def send_seconds(self) -> float:
        schedule = self.schedule()
        return (schedule[-1][0] if schedule else 0.0) + self.tail


FULL = Plan()
SMALL = Plan(
    messages=400,
    worker_kills=3,
    redis_kills=1,
    script_flushes=1,
    client_kills=1,
    proxy_cuts=1,
    drain_timeout=40.0,
    budget=100.0,
)


@dataclass
class Result:
    mode: str
    fsync: str
    plan: Plan
    seconds: float
    verdict: Verdict
    recoveries: list[Recovery]
    faults: list[Fault]
    drained: bool
    left_in_queue: int
    random_drops: int
    worker_exits: list[int | None]
    worker_log: Counter[str] = field(default_factory=Counter)
    sender_error: str | None = None
    folder: str = ""

    def problems(self, *, recovery_bound: float = 2.0) -> list[str]:
        """What went against the expectations (empty: all met)."""
        v, out = self.verdict, []
        if v.acknowledged < self.plan.messages:
            out.append(f"only {v.acknowledged} of {self.plan.messages} sends acknowledged")
        if len(self.faults) < len(self.plan.schedule()):
            out.append(f"only {len(self.faults)} of {len(self.plan.schedule())} faults injected")
        if v.lost and self.fsync == "always":
            out.append(f"{len(v.lost)} acknowledged sends lost with appendfsync always")
        if v.unexplained:
            out.append(f"{len(v.unexplained)} duplicates with no fault in flight")
        if v.phantoms:
            out.append(f"{len(v.phantoms)} handled messages that were never sent")
        if v.dead_lettered:
            out.append(f"{len(v.dead_lettered)} messages dead-lettered")
        if not self.drained:
            out.append(f"the queue did not drain: {self.left_in_queue} messages left")
        for rec in self.recoveries:
            if rec.kind == ledger.REDIS_KILL and (
                rec.all_back is None or rec.all_back > recovery_bound
            ):
                out.append(f"workers back {rec.all_back} s after Redis returned")
        if any(code != 0 for code in self.worker_exits):
            out.append(f"workers stopped with exit codes {self.worker_exits}")
        if self.sender_error:
            out.append(f"the sender failed: {self.sender_error}")
        return out


class Sender(threading.Thread):
    """Sends ``count`` messages paced over ``seconds`` straight to Redis (no proxy: it stands
    for the web process). A failed call is noted as indeterminate and the next message gets
    a new seq; acknowledged sends count towards ``count``."""

    def __init__(self, url: str, count: int, seconds: float, handler_ms: int, seed: int) -> None:
        super().__init__(name="chaos-sender", daemon=True)
        self.q = RSMQ.from_url(
            url, ns=NS, realtime=True, socket_timeout=5, socket_connect_timeout=1
        )
        self.count, self.seconds, self.handler_ms = count, seconds, handler_ms
        self.rng = random.Random(seed)
        self.sends: list[Send] = []
        self.stop = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        try:
            self._send()
        except Exception as exc:  # reported, not raised: a thread has nobody to raise to
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.q.close()

    def _send(self) -> None:
        start, acked, seq = time.monotonic(), 0, 0
        while acked < self.count and not self.stop.is_set():
            due = start + acked * self.seconds / self.count
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            seq += 1
            body = json.dumps({"n": seq, "ms": self.rng.randint(0, self.handler_ms)})
            t0 = time.time()
            try:
                mid: str | None = self.q.send_message(QUEUE, body)
            except (redis.ConnectionError, redis.TimeoutError):
                mid = None
            self.sends.append(Send(seq, t0, time.time(), mid))
            if mid is None:
                self.stop.wait(0.05)
            else:
                acked += 1


class Soak:
    def __init__(self, plan: Plan, mode: str, fsync: str, stack: contextlib.ExitStack) -> None:
        self.plan, self.mode, self.fsync, self.stack = plan, mode, fsync, stack
        self.deadline = Deadline(plan.budget)
        self.rng = random.Random(plan.seed)
        self.dir = Path(tempfile.mkdtemp(prefix="rsmq-chaos-"))
        self.journal = self.dir / "journal"
        self.journal.mkdir()
        self.server = EmbeddedRedis("--appendonly", "yes", "--appendfsync", fsync)
        self.server.start()
        stack.callback(self.server.cleanup)
        self.r = redis.Redis(port=self.server.port, socket_timeout=5)
        stack.callback(self.r.close)
        self.proxy, self.ports = self._start_proxy()
        self.workers: list[WorkerProcess] = []  # every one started, killed ones too
        self.slots: list[WorkerProcess] = []
        self.lives: dict[int, Life] = {}
        self.faults: list[Fault] = []

    def _start_proxy(self) -> tuple[subprocess.Popen[bytes], list[int]]:
        p = self.plan
        proc, ports = proxy.start(
            self.server.port,
            self.dir / "proxy.log",
            ports=p.workers,
            latency_ms=p.latency_ms,
            jitter_ms=p.jitter_ms,
            drop_rate=p.drop_rate,
            seed=p.seed,
        )
        self.stack.callback(proxy.stop, proc)
        return proc, ports

    def _start_worker(self, slot: int) -> WorkerProcess:
        p = self.plan
        w = WorkerProcess(
            f"redis://127.0.0.1:{self.ports[slot]}/0",
            NS,
            queues=QUEUE,
            handler="bench.handlers:journal",
            realtime=str(self.mode == "realtime").lower(),
            vt=p.vt,
            concurrency=p.concurrency,
            poll_interval=p.poll_interval,
            chaos_journal=self.journal,
            log_level="WARNING",
        )
        self.stack.callback(w.cleanup)
        w.start(ready=False)
        self.workers.append(w)
        self.lives[w.pid] = Life(w.pid, slot, time.time())
        return w

    def _wait_ready(self) -> None:
        """Every worker registered, and (realtime) subscribed, as seen from Redis itself."""
        n, channel = self.plan.workers, f"{NS}:rt:{QUEUE}"

        def ready() -> bool:
            for w in self.slots:
                assert w.proc is not None
                if w.proc.poll() is not None:
                    raise RuntimeError(f"a worker exited at start:\n{w.output()}")
            if len(self.r.keys(f"{NS}:@workers:*")) < n:
                return False
            return self.mode != "realtime" or self.r.pubsub_numsub(channel)[0][1] >= n

        self.deadline.until(ready, 30, "the workers to be ready")

    # Faults ------------------------------------------------------------------------------------

    def inject(self, kind: str) -> Fault:
        t = time.time()
        if kind == ledger.WORKER_KILL:
            slot = self.rng.randrange(self.plan.workers)
            old = self.slots[slot]
            old.kill()
            self.lives[old.pid] = Life(old.pid, slot, self.lives[old.pid].started, t)
            new = self.slots[slot] = self._start_worker(slot)
            return Fault(kind, t, t, slot=slot, pid=old.pid, new_pid=new.pid)
        if kind == ledger.REDIS_KILL:
            self.server.stop(kill=True)
            self.server.start()  # same port, same folder: it loads the AOF
            return Fault(kind, t, time.time(), note=f"appendfsync {self.fsync}")
        if kind == ledger.SCRIPT_FLUSH:
            self.r.script_flush()
            return Fault(kind, t, t)
        if kind == ledger.CLIENT_KILL:
            killed = int(self.r.client_kill_filter(_type="pubsub"))
            note = f"{killed} subscriber(s) killed"
            if self.mode == "realtime":
                channel = f"{NS}:rt:{QUEUE}"
                with contextlib.suppress(Exception):
                    self.deadline.until(
                        lambda: self.r.pubsub_numsub(channel)[0][1] >= self.plan.workers,
                        10,
                        "the subscribers to come back",
                    )
                    note += f", all back subscribed after {time.time() - t:.3f} s"
            return Fault(kind, t, t, note=note)
        if kind == ledger.PROXY_CUT:
            self.proxy.send_signal(signal.SIGUSR1)  # the proxy logs each connection it cuts
            return Fault(kind, t, t, note="every worker connection")
        raise ValueError(f"unknown fault {kind!r}")

    # The run -----------------------------------------------------------------------------------

    def run(self) -> Result:
        p = self.plan
        with RSMQ.from_url(self.server.url, ns=NS) as q:
            q.create_queue(QUEUE, vt=p.vt)
        self.slots = [self._start_worker(slot) for slot in range(p.workers)]
        self._wait_ready()
        started = time.time()
        sender = Sender(self.server.url, p.messages, p.send_seconds(), p.handler_ms, p.seed)
        self.stack.callback(sender.stop.set)
        sender.start()
        for offset, kind in p.schedule():
            if (wait := started + offset - time.time()) > 0:
                time.sleep(min(wait, max(0.0, self.deadline.left())))
            if self.deadline.left() <= 0:
                break
            self.faults.append(self.inject(kind))
        sender.join(max(0.0, self.deadline.left() - p.drain_timeout))
        sender.stop.set()
        sender.join(5)
        drained = self._drain()
        exits = [self._stop_worker(w) for w in self.slots]
        seconds = time.time() - started
        return self._result(sender, drained, exits, seconds)

    def _drain(self) -> bool:
        key = f"{NS}:{QUEUE}"
        with contextlib.suppress(AssertionError, RuntimeError):
            self.deadline.until(
                lambda: self.r.zcard(key) == 0,
                self.plan.drain_timeout,
                "the queue to drain",
                interval=0.05,
            )
            return True
        return False

    def _stop_worker(self, w: WorkerProcess) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return w.stop(timeout=15)
        return None

    def _dead_lettered(self) -> list[int]:
        fields = self.r.hgetall(f"{NS}:{QUEUE}-dead:Q")
        seqs = []
        for name, body in fields.items():
            if len(name) == 32 and b":" not in name:  # a message id: the field holds its body
                seqs.append(int(json.loads(body)["n"]))
        return seqs

    def _result(
        self, sender: Sender, drained: bool, exits: list[int | None], seconds: float
    ) -> Result:
        records = ledger.read_journal(self.journal)
        drops = ledger.read_proxy_log(self.dir / "proxy.log")
        faults = sorted(self.faults + drops, key=lambda f: f.t)
        lives = list(self.lives.values())
        verdict = ledger.classify(sender.sends, records, faults, lives, self._dead_lettered())
        log: Counter[str] = Counter()
        for w in self.workers:
            output = w.output()
            # Kept beside the journal (the worker's own log file goes with its cleanup).
            slot = self.lives[w.pid].slot
            (self.dir / f"worker-slot{slot}-{w.pid}.log").write_text(output)
            for line in output.splitlines():
                if " WARNING " in line or " ERROR " in line:
                    log[_log_kind(line)] += 1
        return Result(
            mode=self.mode,
            fsync=self.fsync,
            plan=self.plan,
            seconds=seconds,
            verdict=verdict,
            recoveries=ledger.recoveries(self.faults, records, lives),
            faults=self.faults,
            drained=drained,
            left_in_queue=int(self.r.zcard(f"{NS}:{QUEUE}")),
            random_drops=sum(f.kind == ledger.PROXY_DROP for f in drops),
            worker_exits=exits,
            worker_log=log,
            sender_error=sender.error,
            folder=str(self.dir),
        )


def _log_kind(line: str) -> str:
    """A worker log line without its time, ids and numbers: what kind of complaint it is."""
    text = line.split(": ", 1)[-1]
    words = [w for w in text.split()[:6] if not any(c.isdigit() for c in w)]
    return " ".join(words)


def run(plan: Plan, mode: str, fsync: str, *, keep: bool = False) -> Result:
    """One soak; every process it started is stopped before it returns or raises."""
    if mode not in ("realtime", "polling") or fsync not in ("always", "everysec"):
        raise ValueError(f"mode {mode!r} / fsync {fsync!r}: realtime|polling, always|everysec")
    with contextlib.ExitStack() as stack:
        soak = Soak(plan, mode, fsync, stack)
        if not keep:
            stack.callback(shutil.rmtree, soak.dir, ignore_errors=True)
        return soak.run()
    raise AssertionError("unreachable")
