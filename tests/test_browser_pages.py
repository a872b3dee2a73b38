"""The pages as a person uses them, in Debian's Chromium at a desktop's and a phone's width:
the example page (refusals, a job done, a job dead and where it went, a reload and a new tab
that resume the list), the dashboard's figures against Redis, and axe-core's accessibility
rules on both. Every request the browser tries must stay on 127.0.0.1: others are blocked,
and the test fails if there was one. Screenshots go to .artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from realtime.metrics import metrics_key
from realtime.registry import index_key
from rsmq_core import RSMQ
from support.web import WebProcess
from support.workers import WorkerProcess, wait_for
from tests.handlers import done
from tests.test_browser import ARTIFACTS, BROWSER_ARGS, CHROMIUM
from tests.test_node_compat import npm_install

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not found: install Debian's chromium (.ci/run does)"
)

AXE_PACKAGE = "axe-core@4.10.2"
WIDTHS = {"desktop": 1280, "phone": 390}
AXE_PATH = "/__tests__/axe.min.js"  # answered by the test's route, never by the app
LIMIT = 1024  # the example queue's maxsize in these tests, in bytes


@pytest.fixture(scope="session")
def axe() -> Path:
    return npm_install(AXE_PACKAGE, "the accessibility checks") / "axe-core" / "axe.min.js"


class Visit:
    """A browser context at one width: what it asked for off the machine (blocked), the 404s
    it met and its pages' script errors, all of which a test expects to stay empty."""

    def __init__(self, browser: Any, width: int, name: str, axe: Path) -> None:
        self.axe = axe
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.name = name
        self.outside: list[str] = []
        self.missing: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._only_local)

    def _only_local(self, route: Any) -> None:
        url = urlsplit(route.request.url)
        if url.hostname == "127.0.0.1" and url.path == AXE_PATH:
            # Served as if by the page's own origin: the CSP ('self' scripts only) stays on.
            route.fulfill(path=str(self.axe), content_type="text/javascript")
        elif url.hostname == "127.0.0.1":
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def page(self) -> Any:
        page = self.context.new_page()
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("response", self._answered)
        page.on("console", self._said)
        return page

    def _said(self, message: Any) -> None:
        # The CSP stops an off-site load before any request: the browser only says so here.
        if "Content Security Policy" in message.text:
            self.outside.append(message.text)

    def _answered(self, response: Any) -> None:
        if response.status == 404:
            self.missing.append(response.url)

    def shot(self, page: Any, state: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{self.name}-{state}.png"), full_page=True)

    def check(self) -> None:
        assert self.outside == [], "requests that would have left the machine"
        assert self.missing == []
        assert self.errors == []


def serious_violations(page: Any) -> list[str]:
    page.add_script_tag(url=AXE_PATH)
    result = page.evaluate("axe.run()")
    return [
        f"{v['id']} ({v['impact']}): {v['help']}: {[n['target'] for n in v['nodes']][:5]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def icon_status(page: Any) -> int:
    """What the page's icon link answers (headless Chromium does not ask for it by itself)."""
    href = page.evaluate("document.querySelector('link[rel=icon]').href")
    assert urlsplit(href).path == "/favicon.ico"
    status: int = page.request.get(href).status
    return status


def nothing_scrolls_sideways(page: Any, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    wider = page.evaluate(
        "[...document.querySelectorAll('.scroll, table')]"
        ".filter((e) => e.scrollWidth > e.clientWidth + 1).map((e) => e.id || e.className)"
    )
    assert wider == []


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def deployment(redis_url: str, ns: str) -> Iterator[WebProcess]:
    # Two receives, no backoff: a failing application is dead within a second.
    web = WebProcess(redis_url, ns)
    with RSMQ.from_url(redis_url, ns=ns) as q:
        q.set_queue_attributes("jobs", maxsize=LIMIT)
    worker = WorkerProcess(redis_url, ns, max_receives=2, retry_backoff=0).start()
    yield web
    worker.cleanup()
    web.stop()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("width", WIDTHS.values(), ids=WIDTHS.keys())
def test_the_example_page_refuses_follows_explains_and_resumes(
    deployment, browser, axe, redis_url, ns, width
):
    from playwright.sync_api import expect

    visit = Visit(browser, width, f"example-{width}", axe)
    page = visit.page()
    sent: list[str] = []
    page.on("request", lambda r: sent.extend([r.url] if r.url.endswith("/submit") else []))
    page.goto(deployment.url("/"))
    expect(page.locator("#connection")).to_have_text("Live", timeout=10_000)
    items = page.locator("#applications li")

    # Empty: refused in the page, before any request; the field says why.
    page.fill("#message", "  ")
    page.click("#submit")
    expect(page.locator("#message-error")).to_have_text(
        "Write your application first: an empty message is refused."
    )
    expect(page.locator("#message")).to_have_attribute("aria-invalid", "true")
    assert sent == [] and items.count() == 0
    visit.shot(page, "refused-empty")

    # Too long: the server's refusal, with the limit and the size.
    page.fill("#message", "x" * 2000)
    page.click("#submit")
    refused = page.locator("#applications li.refused").first
    expect(refused).to_have_text(
        f"Refused: Message too long: this queue takes messages of at most {LIMIT} bytes "
        "(UTF-8); yours has 2000 bytes."
    )
    expect(page.locator("#announce")).to_contain_text("Message too long")
    visit.shot(page, "refused-too-long")

    # From the keyboard alone: to the field, type, to the button, Enter.
    page.locator("#message").focus()
    page.keyboard.press("Control+A")
    page.keyboard.type(json.dumps({"applicant": "Ada", "sleep": 0.2}))
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "submit"
    page.keyboard.press("Enter")
    good = page.locator("#applications li[data-id]").first
    expect(good.locator(".status")).to_have_text("done", timeout=20_000)
    good_id = good.get_attribute("data-id")
    expect(page.locator("#message-error")).to_be_hidden()
    visit.shot(page, "done")

    # A failing application: its error while it fails, then dead, and where it went.
    page.fill("#message", json.dumps({"fail": "no such applicant <b>x</b>"}))
    page.click("#submit")
    bad = page.locator("#applications li[data-id]").first
    expect(bad.locator(".status")).to_have_text("dead", timeout=20_000)
    bad_id = bad.get_attribute("data-id")
    assert bad_id != good_id
    expect(bad.locator(".error-text")).to_have_text(
        "Error: RuntimeError: no such applicant <b>x</b> (rc=2)"
    )
    assert bad.locator("b").count() == 0  # an error is text, never HTML
    with RSMQ.from_url(redis_url, ns=ns) as q:
        dead = q.peek_messages("jobs-dead").messages
    assert [json.loads(m.message) for m in dead] == [{"fail": "no such applicant <b>x</b>"}]
    expect(bad.locator(".next")).to_have_text(
        f"It failed too often and was moved to the dead-letter queue jobs-dead (as {dead[0].id})."
        " To bring it back, redrive it from jobs-dead to jobs on the dashboard (Act on a queue)."
    )
    expect(page.locator("#announce")).to_contain_text("dead")
    visit.shot(page, "dead")
    assert serious_violations(page) == []
    assert icon_status(page) == 200

    # A reload shows the same list, as it was.
    page.reload()
    expect(page.locator("#connection")).to_have_text("Live", timeout=10_000)
    expect(items).to_have_count(2)
    expect(page.locator(f'li[data-id="{good_id}"] .status')).to_have_text("done")
    expect(page.locator(f'li[data-id="{bad_id}"] .error-text')).to_contain_text("no such")
    expect(page.locator(f'li[data-id="{bad_id}"] .next')).to_contain_text("jobs-dead")

    # One still moving when the page goes: a new tab resumes it from its last event id and
    # sees it done, with what happened meanwhile.
    page.fill("#message", json.dumps({"sleep": 1.5}))
    page.click("#submit")
    slow = page.locator("#applications li[data-id]").first
    expect(slow.locator(".status")).to_have_text("processing 50%", timeout=20_000)
    slow_id = slow.get_attribute("data-id")
    page.close()
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    wait_for(lambda: slow_id in [d["id"] for d in done(r, ns)], what="the slow application")
    r.close()
    tab = visit.page()
    frames: list[dict[str, Any]] = []
    tab.on("websocket", lambda ws: ws.on("framesent", lambda f: frames.append(json.loads(f))))
    tab.goto(deployment.url("/"))
    expect(tab.locator(f'li[data-id="{slow_id}"] .status')).to_have_text("done", timeout=10_000)
    expect(tab.locator("#applications li")).to_have_count(3)
    subscribes = [f for f in frames if f.get("type") == "subscribe"]
    assert [f["ids"] for f in subscribes] == [[slow_id]]  # those done or dead are not followed
    assert "after" in subscribes[0]
    visit.shot(tab, "resumed")
    visit.check()
    visit.context.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("width", WIDTHS.values(), ids=WIDTHS.keys())
def test_the_dashboard_figures_agree_with_redis_and_each_other(
    deployment, browser, axe, redis_url, ns, width
):
    from playwright.sync_api import expect

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    # Done before the page opens: the page shows them all the same.
    for i in range(4):
        deployment.post("/api/queues/jobs/messages", {"message": json.dumps({"n": i})})
    deployment.post("/api/queues/jobs/messages", {"message": json.dumps({"fail": "no"})})
    wait_for(lambda: len(done(r, ns)) == 4, what="four jobs done")
    visit = Visit(browser, width, f"dashboard-{width}", axe)
    page = visit.page()
    page.goto(deployment.url("/dashboard"))
    expect(page.locator("#connection")).to_have_text("Live", timeout=10_000)
    jobs = page.locator("#queues tbody tr").filter(has=page.locator("td", has_text="jobs")).first
    expect(jobs.locator('td[data-label="done"]')).to_have_text("4", timeout=10_000)
    expect(jobs.locator('td[data-label="failed"]')).to_have_text("2", timeout=10_000)
    worker = page.locator("#workers tbody tr").first
    expect(worker.locator('td[data-label="done since it started"]')).to_have_text("4")
    expect(page.locator("#latency-summary")).to_contain_text(
        "4 messages done on the queues listed; the last 4: p50", timeout=10_000
    )
    expect(page.locator("#latency-summary")).to_contain_text("realtime (blue): 4, p50")
    # ...each figure as Redis has it
    fields = r.hgetall(metrics_key(index_key(r, ns)))  # type: ignore[arg-type]
    assert fields["jobs:jobs:done"] == "4" and fields["jobs:jobs:failed"] == "2"
    (entry,) = [json.loads(v) for v in r.mget(r.keys(f"{index_key(r, ns)}:*")) if v]  # type: ignore[arg-type]
    assert entry["counters"]["done"] == 4
    r.close()
    nothing_scrolls_sideways(page, width)
    page.keyboard.press("Tab")  # the first stop is the link back to the example app
    assert page.evaluate("document.activeElement.getAttribute('href')") == "/"
    visit.shot(page, "figures")
    assert serious_violations(page) == []
    assert icon_status(page) == 200
    visit.check()
    visit.context.close()


@pytest.mark.timeout(120)
def test_another_tab_follows_what_this_one_submits(deployment, browser, axe):
    from playwright.sync_api import expect

    visit = Visit(browser, WIDTHS["desktop"], "two-tabs", axe)
    here, there = visit.page(), visit.page()
    for page in (here, there):
        page.goto(deployment.url("/"))
        expect(page.locator("#connection")).to_have_text("Live", timeout=10_000)
    here.fill("#message", json.dumps({"sleep": 0.2}))
    here.click("#submit")
    expect(there.locator("#applications li[data-id] .status")).to_have_text("done", timeout=20_000)
    visit.check()
    visit.context.close()


@pytest.mark.timeout(120)
def test_without_storage_the_page_still_follows_its_applications(deployment, browser, axe):
    from playwright.sync_api import expect

    visit = Visit(browser, WIDTHS["desktop"], "no-storage", axe)
    # As a browser that forbids storage to the site: every use of it throws.
    visit.context.add_init_script(
        "Object.defineProperty(window, 'localStorage', "
        "{get() { throw new DOMException('denied', 'SecurityError'); }});"
    )
    page = visit.page()
    page.goto(deployment.url("/"))
    expect(page.locator("#connection")).to_have_text("Live", timeout=10_000)
    page.click("#submit")
    expect(page.locator("#applications li[data-id] .status")).to_have_text("done", timeout=20_000)
    page.reload()  # nothing kept: an empty list, not an error
    expect(page.locator("#connection")).to_have_text("Live", timeout=10_000)
    expect(page.locator("#applications li")).to_have_count(0)
    visit.check()
    visit.context.close()


@pytest.mark.timeout(120)
def test_an_application_that_expires_after_a_receive_shows_expired(redis_url, ns, browser, axe):
    """The sweep's "expired" event carries rc 0 (it cannot know the receive count): the page
    took a lower rc as older and kept showing "retrying" for good, and followed it on."""
    from playwright.sync_api import expect

    from realtime import StatusEvent
    from tests.test_results import record

    web = WebProcess(redis_url, ns)  # no worker: the test says what happens
    visit = Visit(browser, WIDTHS["desktop"], "expired", axe)
    try:
        page = visit.page()
        page.goto(web.url("/"))
        expect(page.locator("#connection")).to_have_text("Live", timeout=10_000)
        page.fill("#message", json.dumps({"applicant": "Ada"}))
        page.click("#submit")
        item = page.locator("#applications li[data-id]").first
        expect(item.locator(".status")).to_have_text("queued", timeout=10_000)
        mid = item.get_attribute("data-id")
        r = redis.Redis.from_url(redis_url)
        record(r, ns, StatusEvent("retrying", "jobs", mid, rc=1, error="RuntimeError: x"))
        expect(item.locator(".status")).to_have_text("retrying", timeout=10_000)
        record(r, ns, StatusEvent("expired", "jobs", mid))
        expect(item.locator(".status")).to_have_text("expired", timeout=10_000)
        r.close()
        frames: list[dict[str, Any]] = []
        tab = visit.page()
        tab.on("websocket", lambda ws: ws.on("framesent", lambda f: frames.append(json.loads(f))))
        tab.goto(web.url("/"))
        expect(tab.locator(f'li[data-id="{mid}"] .status')).to_have_text("expired", timeout=10_000)
        assert [f for f in frames if f.get("type") == "subscribe"] == []  # ended: not followed
        visit.check()
    finally:
        visit.context.close()
        web.stop()
