// The dashboard's actions: peek at a queue, a message's timeline, delete, retry now, redrive,
// purge (confirmed in the page), pause and resume, change vt, delay, maxsize, retention and
// the dedup window.
// Calls go to /dashboard/api/... with the login cookie and this page's CSRF token (never to
// /api, which takes only the API token). Text only: bodies and names come from Redis.
"use strict";
(() => {
  const CSRF = document.querySelector("meta[name=csrf]").content;
  const $ = (id) => document.getElementById(id);
  const PAGE = 20;
  let queue = "";
  let offset = 0;

  function say(text, failed = false) {
    $("action-status").textContent = text;
    $("action-status").className = failed ? "error" : "";
  }

  async function call(method, path, body) {
    const init = {method, headers: {"x-csrf-token": CSRF}, credentials: "same-origin"};
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const answer = await fetch("/dashboard/api/queues/" + encodeURIComponent(queue) + path, init);
    const data = await answer.json().catch(() => ({}));
    if (!answer.ok) throw new Error(data.message || "the server answered " + answer.status);
    return data;
  }

  // One action: run it, say what happened, show the queue as it is now.
  async function act(what, run) {
    try {
      say(what + ": " + await run());
    } catch (error) {
      say(what + " failed: " + error.message, true);
    }
    await peek();
  }

  function when(ms) { return ms ? new Date(ms).toLocaleTimeString() : "—"; }

  function button(label, onclick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.addEventListener("click", onclick);
    return b;
  }

  function row(m) {
    const tr = document.createElement("tr");
    tr.dataset.id = m.id;
    const pick = document.createElement("input");
    pick.type = "checkbox";
    pick.value = m.id;
    pick.setAttribute("aria-label", "select " + m.id);
    const cells = [pick, m.id, m.message === null ? "(bytes, base64) " + m.message_base64 : m.message,
      m.rc, when(m.fr), when(m.visible_at), m.visible ? "visible" : "hidden"];
    for (const value of cells) {
      const td = document.createElement("td");
      if (value instanceof Node) td.append(value); else td.textContent = String(value);
      tr.append(td);
    }
    const td = document.createElement("td");
    td.append(
      button("Timeline", () => timeline(m.id)),
      button("Retry now", () => act("Retry now " + m.id, async () =>
        (await call("POST", "/messages/" + m.id + "/visible")).changed ? "visible now" : "gone")),
      button("Delete", () => act("Delete " + m.id, async () =>
        (await call("DELETE", "/messages/" + m.id)).deleted ? "deleted" : "gone")));
    tr.append(td);
    return tr;
  }

  async function peek() {
    if (!queue) return;
    let page;
    try {
      page = await call("GET", "/peek?offset=" + offset + "&count=" + PAGE);
    } catch (error) {
      say("Peek failed: " + error.message, true);
      return;
    }
    $("peek").querySelector("tbody").replaceChildren(...page.messages.map(row));
    const last = page.offset + page.messages.length;
    $("peek-range").textContent = page.total
      ? `messages ${page.offset + 1}–${last} of ${page.total}` : "no messages";
    $("peek-prev").disabled = page.offset === 0;
    $("peek-next").disabled = page.next_offset === null;
    $("paused-state").textContent = page.paused_since
      ? "Paused since " + when(page.paused_since) + ": workers take nothing from it."
      : "Running.";
  }

  async function timeline(id) {
    const list = $("timeline");
    $("timeline-title").textContent = "Timeline of " + id;
    try {
      const {events} = await call("GET", "/messages/" + id + "/timeline");
      list.replaceChildren(...events.map((e) => {
        const li = document.createElement("li");
        li.className = "event";
        li.textContent = [when(e.ts), e.status, e.rc ? "receive " + e.rc : "",
          e.worker ? "worker " + e.worker : "", e.by ? "by " + e.by : "", e.detail || "",
          e.error || "", e.dead_letter_id ? "now " + e.dead_letter_id : "",
          e.result !== undefined ? "result " + JSON.stringify(e.result) : ""]
          .filter(Boolean).join(" · ");
        return li;
      }));
      if (!events.length) say("No events kept for " + id + " (the stream is capped).");
    } catch (error) {
      say("Timeline failed: " + error.message, true);
    }
  }

  function selected() {
    return [...$("peek").querySelectorAll("tbody input:checked")].map((box) => box.value);
  }

  function target() { return $("redrive-to").value.trim(); }

  function choose(name) {
    queue = name;
    offset = 0;
    $("redrive-to").value = name.endsWith("-dead") ? name.slice(0, -5) : "";
    $("timeline").replaceChildren();
    $("timeline-title").textContent = "Timeline";
    $("purge-confirm").hidden = true;
    peek();
  }

  // The queue list follows the figures the dashboard's socket pushes every second.
  document.addEventListener("stats", (event) => {
    const select = $("action-queue");
    const names = Object.keys(event.detail.queues);
    const shown = [...select.options].map((o) => o.value);
    if (names.join() !== shown.join()) {
      select.replaceChildren(...names.map((n) => new Option(n, n)));
      if (names.includes(queue)) select.value = queue;
    }
    if (!queue && names.length) choose(names[0]);
  });

  $("action-queue").addEventListener("change", (e) => choose(e.target.value));
  $("peek-refresh").addEventListener("click", peek);
  $("peek-prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); peek(); });
  $("peek-next").addEventListener("click", () => { offset += PAGE; peek(); });
  $("pause").addEventListener("click", () => act("Pause " + queue, async () =>
    (await call("POST", "/pause")).changed ? "paused" : "was paused already"));
  $("resume").addEventListener("click", () => act("Resume " + queue, async () =>
    (await call("POST", "/resume")).changed ? "resumed" : "was not paused"));
  $("redrive-selected").addEventListener("click", () => act("Redrive selected", async () => {
    const ids = selected();
    if (!ids.length) throw new Error("select messages first");
    return (await call("POST", "/redrive", {to: target(), ids})).moved + " moved to " + target();
  }));
  $("redrive-all").addEventListener("click", () => act("Redrive all", async () =>
    (await call("POST", "/redrive", {to: target()})).moved + " moved to " + target()));
  $("purge").addEventListener("click", () => {
    $("purge-question").textContent =
      `Remove every message of ${queue}? This cannot be undone.`;
    $("purge-confirm").hidden = false;
    $("purge-no").focus(); // the safe answer first: Enter by habit removes nothing
  });
  // Cancel, by button or Escape, gives the keyboard back where it was.
  const cancelPurge = () => { $("purge-confirm").hidden = true; $("purge").focus(); };
  $("purge-no").addEventListener("click", cancelPurge);
  $("purge-confirm").addEventListener("keydown", (event) => {
    if (event.key === "Escape") cancelPurge();
  });
  $("purge-yes").addEventListener("click", () => {
    $("purge-confirm").hidden = true;
    act("Purge " + queue, async () => (await call("POST", "/purge")).purged + " removed");
  });
  $("settings").addEventListener("submit", (event) => {
    event.preventDefault();
    const body = {};
    for (const name of ["vt", "delay", "maxsize", "retention", "dedup_window"]) {
      const value = $("set-" + name).value.trim();
      if (value !== "") body[name] = Number(value);
    }
    act("Change " + queue, async () => {
      const q = await call("PATCH", "", body);
      return `vt ${q.vt}s, delay ${q.delay}s, maxsize ${q.maxsize}, ` +
        (q.retention ? `retention ${q.retention}s` : "kept forever") +
        `, dedup window ${q.dedup_window}s`;
    });
  });
})();
