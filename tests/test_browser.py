"""One real browser: headless Chromium clicks the button and watches the status reach done.

Needs Debian's ``chromium`` (``.ci/run`` installs it) and the ``playwright`` package (a dev
dependency), which drives it through ``executable_path``: no browser is downloaded.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rsmq_core import RSMQ
from support.web import WebProcess
from support.workers import WorkerProcess
from web.dashboard import LISTED

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / ".artifacts"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def dashboard(web: WebProcess, token: str | None = None) -> Iterator[tuple[Any, list[str]]]:
    """A Chromium page on the dashboard (logged in with ``token`` if given), and the page's
    errors."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(web.url("/dashboard"))
            if token is not None:
                page.fill("#token", token)
                page.click("#submit")
                expect(page.locator("h1")).to_have_text("Dashboard", timeout=10_000)
            yield page, errors
        finally:
            browser.close()


pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not found: install Debian's chromium (.ci/run does)"
)


@pytest.fixture
def app(redis_url: str, ns: str) -> Iterator[WebProcess]:
    web = WebProcess(redis_url, ns)
    worker = WorkerProcess(redis_url, ns, handler="tests.handlers:record").start()
    yield web
    worker.cleanup()
    web.stop()


def live_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    """The example app's page open in ``browser``, once Live; the page's script errors."""
    from playwright.sync_api import expect

    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    expect(page.locator("#connection")).to_have_text("Live", timeout=10_000)
    return page, errors


@pytest.mark.timeout(120)
def test_click_submit_and_watch_it_reach_done(app):
    from playwright.sync_api import expect, sync_playwright

    hostile = "<img src=x onerror=document.title='pwned'>"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page, errors = live_page(browser, app.url("/"))
            # The handler returns {"result"}: a result that echoes a body, HTML and all.
            page.fill(
                "#message", json.dumps({"note": hostile, "sleep": 0.2, "result": {"note": hostile}})
            )
            page.click("#submit")
            item = page.locator("#applications li").first
            expect(item.locator(".status")).to_have_text("done", timeout=20_000)
            assert hostile in item.locator(".body").inner_text()  # shown as text
            expect(item.locator(".result")).to_have_text(
                "result: " + json.dumps({"note": hostile}, separators=(",", ":"))
            )  # the result too
            assert page.locator("#applications img").count() == 0  # never as HTML
            assert page.title() != "pwned"
            assert "worker" in item.locator(".meta").inner_text()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "example-app-done.png"), full_page=True)
            assert errors == []

            board = browser.new_page()
            board.on("pageerror", lambda e: errors.append(str(e)))
            board.goto(app.url("/dashboard"))
            expect(board.locator("#workers tbody tr").first).to_contain_text(
                "realtime", timeout=10_000
            )
            expect(board.locator("#queues tbody")).to_contain_text("jobs", timeout=10_000)
            # Done while watched, with a result that is HTML: shown as text.
            app.post("/api/queues/jobs/messages", {"message": json.dumps({"result": hostile})})
            expect(board.locator("#latency-summary")).to_contain_text("p50", timeout=20_000)
            expect(board.locator("#results li").first).to_contain_text(hostile, timeout=10_000)
            assert board.locator("#results img").count() == 0 and board.title() != "pwned"
            expect(board.locator("#results-none")).to_be_hidden()
            board.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            phone = browser.new_page(viewport={"width": 390, "height": 844})
            for path, name in (
                ("/", "example-app-phone.png"),
                ("/dashboard", "dashboard-phone.png"),
            ):
                phone.goto(app.url(path))
                expect(phone.locator("#connection")).to_have_text("Live", timeout=10_000)
                # Nothing wider than the phone: tables scroll inside their own box.
                assert phone.evaluate("document.documentElement.scrollWidth") <= 390
                phone.screenshot(path=str(ARTIFACTS / name), full_page=True)
            phone.keyboard.press("Tab")  # the first stop is the link back to the example app
            assert phone.evaluate("document.activeElement.tagName") == "A"
            assert errors == []
        finally:
            browser.close()


TOKEN = "browser-token-browser-token"


@pytest.fixture
def closed_app(redis_url: str, ns: str) -> Iterator[WebProcess]:
    with RSMQ.from_url(redis_url, ns=ns) as q:  # more queues than the dashboard lists
        for i in range(LISTED + 2):
            q.create_queue(f"q{i:03}")
    web = WebProcess(redis_url, ns, API_TOKEN=TOKEN)
    worker = WorkerProcess(redis_url, ns, handler="tests.handlers:record").start()
    yield web
    worker.cleanup()
    web.stop()


@pytest.mark.timeout(120)
def test_with_a_token_the_page_follows_its_own_and_the_dashboard_needs_a_login(closed_app):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # The example page stays public: it follows its message by the ticket it was given.
            page.goto(closed_app.url("/"))
            expect(page.locator("#connection")).to_have_text("Live", timeout=10_000)
            page.fill("#message", json.dumps({"sleep": 0.1}))
            page.click("#submit")
            status = page.locator("#applications li .status").first
            expect(status).to_have_text("done", timeout=20_000)

            page.goto(closed_app.url("/dashboard"))  # -> the login form
            expect(page.locator("h1")).to_have_text("Log in")
            page.fill("#token", "not-the-token-at-all")
            page.click("#submit")
            expect(page.locator("#error")).to_contain_text("Wrong token")
            page.fill("#token", TOKEN)
            page.click("#submit")
            expect(page.locator("h1")).to_have_text("Dashboard", timeout=10_000)
            expect(page.locator("#queues tbody")).to_contain_text("jobs", timeout=10_000)
            # Past what it lists, it says so.
            expect(page.locator("#queues-note")).to_contain_text(
                f"{LISTED + 3} queues: the first {LISTED}", timeout=10_000
            )
            page.click("#logout")
            expect(page.locator("h1")).to_have_text("Log in")
            assert errors == []
        finally:
            browser.close()


@pytest.mark.timeout(120)
def test_the_compare_view_shows_polling_picking_up_later_than_realtime(redis_url, ns):
    from playwright.sync_api import expect

    web = WebProcess(redis_url, ns)
    workers = [
        WorkerProcess(redis_url, ns, queues="rt", realtime="true").start(),
        WorkerProcess(redis_url, ns, queues="poll", realtime="false", poll_interval="1").start(),
    ]
    try:
        with RSMQ.from_url(redis_url, ns=ns, realtime=True) as q:
            for _ in range(8):  # spread over the polling interval, as a trickle is
                q.send_message("rt", "{}")
                q.send_message("poll", "{}")
                time.sleep(0.15)
        with dashboard(web) as (board, errors):
            pickups = board.locator('#compare td[data-field="pickups"]')
            expect(pickups.nth(0)).to_have_text("8", timeout=20_000)  # realtime
            expect(pickups.nth(1)).to_have_text("8", timeout=20_000)  # polling

            def p50(mode: str) -> float:
                cell = board.locator(f'#compare td[data-mode="{mode}"][data-field="p50"]')
                return float(cell.inner_text())

            assert p50("polling") > p50("realtime")
            assert p50("polling") >= 50  # a second's polling: pickups wait for the poll
            # The chart: a bar per mode and percentile, axes titled, ticks labelled
            assert board.locator("#compare-chart rect[data-percentile]").count() == 6
            expect(board.locator("#compare-y-title")).to_have_text("pickup latency, ms (log scale)")
            expect(board.locator("#compare-x-title")).to_contain_text("percentile")
            assert board.locator("#compare-chart text.tick").count() >= 5
            commands = board.locator('#compare td[data-field="commands"]')
            expect(commands.nth(1)).not_to_have_text("—", timeout=10_000)
            per_worker = board.locator('#compare-workers td[data-field="commands"]')
            expect(per_worker).to_have_count(2)
            for i in range(2):  # each worker's own figure, a number
                expect(per_worker.nth(i)).not_to_have_text("—", timeout=10_000)
                float(per_worker.nth(i).inner_text())
            ARTIFACTS.mkdir(exist_ok=True)
            board.locator("#compare-title").scroll_into_view_if_needed()
            board.screenshot(path=str(ARTIFACTS / "dashboard-compare.png"), full_page=True)
            assert errors == []
    finally:
        for w in workers:
            w.cleanup()
        web.stop()
