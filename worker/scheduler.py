"""Firing periodic schedules from a worker process.

Every worker runs this loop; the script that claims a tick also moves it on and sends it, so
any number of workers fire each tick once, and a worker killed between calls loses none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from realtime.subscriber import CONNECTION_LOST, Wakeup
from rsmq_core import AsyncRSMQ, Fired, QueueNotFound, RSMQError, Schedule

log = logging.getLogger(__name__)

# Seconds between looks while Redis is out of reach, or a declared schedule is not yet stored.
MAX_WAIT = 1.0


async def declare(rsmq: AsyncRSMQ, schedules: tuple[Schedule, ...]) -> bool:
    """Add (or replace) the SCHEDULES setting's schedules; False while Redis is out of reach.
    Several workers that start at once all write the same definitions under the same names,
    and none moves a next fire time on (see schedule.lua's "add")."""
    for s in schedules:
        try:
            await rsmq.add_schedule(
                s.name, s.queue, s.message, cron=s.cron, every=s.every, catch_up=s.catch_up
            )
            log.info("schedule %s declared: %s to queue %s", s.name, _timing(s), s.queue)
        except QueueNotFound:
            log.error(
                "schedule %s not declared: there is no queue %s (create it, or add it to "
                "QUEUES, which creates it at start)",
                s.name,
                s.queue,
            )
        except CONNECTION_LOST as exc:
            log.warning("could not declare schedule %s yet: %s", s.name, exc)
            return False
    return True


def _timing(s: Schedule) -> str:
    return f"cron {s.cron!r} (UTC)" if s.cron is not None else f"every {s.every} s"


def report(fired: Fired) -> None:
    if fired.outcome == "sent":
        log.info("schedule %s: sent %s to %s", fired.name, fired.id, fired.queue)
    elif fired.outcome == "skipped":
        log.info(
            "schedule %s: skipped ticks missed while no worker ran (catch_up skip)", fired.name
        )
    elif fired.outcome == "queueNotFound":
        log.warning(
            "schedule %s: queue %s does not exist, so this tick sent nothing; create the queue "
            "or remove the schedule (rsmq schedule remove %s)",
            fired.name,
            fired.queue,
            fired.name,
        )
    elif fired.outcome == "invalid":
        log.warning(
            "schedule %s: its stored definition is not one this worker reads, so it "
            "fires nothing; add it again or remove it (rsmq schedule remove %s)",
            fired.name,
            fired.name,
        )
    else:
        log.warning(
            "schedule %s: its message is longer than queue %s's maxsize; tick skipped",
            fired.name,
            fired.queue,
        )


async def run(
    rsmq: AsyncRSMQ,
    schedules: tuple[Schedule, ...],
    stopping: asyncio.Event,
    wake: Wakeup | None,
    poll_interval: float,
) -> None:
    """Declare ``schedules``, then fire every due tick until ``stopping`` is set.

    Between ticks it sleeps until the next one is due. With ``wake`` (a realtime worker's:
    set when a schedule is added or removed, after every resubscribe, and on stop) an idle
    worker with no schedule due sends Redis nothing; without it (polling) it looks every
    ``poll_interval`` too."""
    declared = not schedules
    failures = 0
    while not stopping.is_set():
        if wake is not None:
            wake.clear()  # what is said from here on wakes the wait below
        wait: float | None = MAX_WAIT
        try:
            if not declared:
                declared = await declare(rsmq, schedules)
            firing = await rsmq.fire_schedules()
            for fired in firing.fired:
                report(fired)
            wait = firing.wait if declared else MAX_WAIT
            if failures:
                log.info("schedules: Redis is back after %d failed look(s)", failures)
            failures = 0
        except CONNECTION_LOST as exc:
            failures += 1
            level = logging.WARNING if failures == 1 else logging.DEBUG  # one warning an outage
            log.log(level, "schedules: could not look for due ticks (%d): %s", failures, exc)
        except RSMQError as exc:
            log.error("schedules: %s", exc.explain())
        except Exception:
            # Logged and tried again a second later: a loop that died quietly would leave
            # this worker firing nothing (a definition written by hand that is not ours...).
            log.exception("schedules: could not fire the due ticks")
        if wake is None:
            wait = poll_interval if wait is None else min(wait, poll_interval)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await stopping.wait()
        elif wait is None or wait > 0:
            await wake.wait(wait)
