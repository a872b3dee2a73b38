"""The dashboard acts, in a real Chromium (Debian's, as tests/test_browser.py drives it): log
in, pause a queue and see a real worker stop taking its messages, retry one now, open its
timeline, resume and see the worker take it, delete, redrive the selected and all, purge
after the page's confirmation, change vt, retention and the dedup window."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from rsmq_core import RSMQ
from support.web import WebProcess
from support.workers import WorkerProcess, wait_for
from tests.handlers import done, started
from tests.test_browser import ARTIFACTS, CHROMIUM, dashboard

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not found: install Debian's chromium (.ci/run does)"
)

TOKEN = "browser-token-browser-token"


@pytest.fixture
def deployment(redis_url: str, ns: str) -> Iterator[tuple[WebProcess, WorkerProcess]]:
    web = WebProcess(redis_url, ns, API_TOKEN=TOKEN)
    worker = WorkerProcess(redis_url, ns, queues="jobs,other", heartbeat=60)
    try:
        worker.start()
        yield web, worker
    finally:
        worker.cleanup()
        web.stop()


def row(page: Any, mid: str) -> Any:
    return page.locator(f'#peek tbody tr[data-id="{mid}"]')


@pytest.mark.timeout(180)
def test_the_dashboard_peeks_times_deletes_retries_redrives_purges_pauses_and_resumes(
    deployment, redis_url, ns
):
    from playwright.sync_api import expect

    web, _ = deployment
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    q = RSMQ.from_url(redis_url, ns=ns, realtime=True)
    for name in ("jobs-dead", "scratch"):
        q.create_queue(name)
    held = q.send_message("jobs", "{}", delay=600)
    victim = q.send_message("jobs", "victim", delay=600)
    dead = q.send_messages("jobs-dead", ["d1", "d2", "d3"])
    q.send_messages("scratch", ["s1", "s2", "s3"])
    try:
        with dashboard(web, TOKEN) as (page, errors):
            expect(page.locator("#action-queue option[value=jobs]")).to_have_count(
                1, timeout=10_000
            )
            page.select_option("#action-queue", "jobs")
            status = page.locator("#action-status")

            # Peek: both delayed messages, hidden, never received; nothing changed by looking.
            expect(row(page, held)).to_contain_text("hidden", timeout=10_000)
            expect(row(page, victim)).to_contain_text("victim")
            assert q.peek_messages("jobs").messages[0].rc == 0

            # Pause, then retry now: the message is visible, and the worker leaves it.
            page.click("#pause")
            expect(status).to_have_text("Pause jobs: paused")
            expect(page.locator("#paused-state")).to_contain_text("Paused since")
            row(page, held).get_by_role("button", name="Retry now").click()
            expect(status).to_contain_text("visible now")
            expect(row(page, held)).to_contain_text("visible")
            alive = q.send_message("other", "{}")  # the worker is alive and past the pause
            wait_for(lambda: alive in [d["id"] for d in done(r, ns)], what="other's message")
            assert held not in [s["id"] for s in started(r, ns)]

            # Its timeline says what was done, and from where.
            row(page, held).get_by_role("button", name="Timeline").click()
            expect(page.locator("#timeline")).to_contain_text("made visible · by dashboard")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-actions.png"), full_page=True)

            # Resume: the worker takes it, without a restart.
            page.click("#resume")
            expect(status).to_have_text("Resume jobs: resumed")
            wait_for(lambda: held in [d["id"] for d in done(r, ns)], what="the held message")

            # Delete.
            row(page, victim).get_by_role("button", name="Delete").click()
            expect(status).to_contain_text("deleted")
            expect(row(page, victim)).to_have_count(0)
            assert q.peek_messages("jobs").total == 0

            # Redrive the selected, then all, back to "jobs" (filled in from the name).
            page.select_option("#action-queue", "jobs-dead")
            expect(page.locator("#redrive-to")).to_have_value("jobs")
            row(page, dead[1]).locator("input[type=checkbox]").check()
            page.click("#redrive-selected")
            expect(status).to_have_text("Redrive selected: 1 moved to jobs")
            expect(row(page, dead[1])).to_have_count(0)
            page.click("#redrive-all")
            expect(status).to_have_text("Redrive all: 2 moved to jobs")
            expect(page.locator("#peek-range")).to_have_text("no messages")

            # Purge, only once confirmed in the page.
            page.select_option("#action-queue", "scratch")
            expect(page.locator("#peek-range")).to_have_text("messages 1\u20133 of 3")
            page.click("#purge")
            page.click("#purge-no")
            assert q.peek_messages("scratch").total == 3
            # From the keyboard: the question takes the focus on Cancel; Escape says no.
            page.locator("#purge").focus()
            page.keyboard.press("Enter")
            expect(page.locator("#purge-no")).to_be_focused()
            page.keyboard.press("Escape")
            expect(page.locator("#purge-confirm")).to_be_hidden()
            expect(page.locator("#purge")).to_be_focused()
            assert q.peek_messages("scratch").total == 3
            page.click("#purge")
            expect(page.locator("#purge-question")).to_contain_text("scratch")
            page.click("#purge-yes")
            expect(status).to_have_text("Purge scratch: 3 removed")
            page.fill("#set-vt", "45")
            page.click("#settings button[type=submit]")
            expect(status).to_contain_text("vt 45s")
            assert q.get_queue_attributes("scratch").vt == 45
            # Retention: refused when negative, saying why; then set, and shown per queue.
            page.fill("#set-retention", "-1")
            page.click("#settings button[type=submit]")
            expect(status).to_contain_text("retention must be between 0 and 9999999")
            assert q.get_queue_attributes("scratch").retention == 0
            page.fill("#set-retention", "60")
            page.click("#settings button[type=submit]")
            expect(status).to_contain_text("retention 60s")
            assert q.get_queue_attributes("scratch").retention == 60
            # The dedup window: refused past its bounds, saying why; then set.
            page.fill("#set-retention", "")
            page.fill("#set-dedup_window", "0")
            page.click("#settings button[type=submit]")
            expect(status).to_contain_text("dedup_window must be")
            assert q.get_queue_attributes("scratch").dedup_window == 300
            page.fill("#set-dedup_window", "60")
            page.click("#settings button[type=submit]")
            expect(status).to_contain_text("dedup window 60s")
            assert q.get_queue_attributes("scratch").dedup_window == 60
            scratch = page.locator("#queues tbody tr", has_text="scratch")
            expect(scratch.locator("td[data-label=retention]")).to_have_text("60 s")
            expect(scratch.locator("td[data-label=expired]")).to_have_text("0")
            assert errors == []
    finally:
        q.close()
        r.close()
