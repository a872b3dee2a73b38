// The dashboard's schedules: each one's queue, timing and next fire time, refreshed every few
// seconds, and a button that removes it. Calls go to /dashboard/api/schedules with the login
// cookie and this page's CSRF token, as actions.js's do. Text only: names and bodies come
// from Redis.
"use strict";
(() => {
  const CSRF = document.querySelector("meta[name=csrf]").content;
  const $ = (id) => document.getElementById(id);
  const REFRESH_MS = 5000;

  function say(text, failed = false) {
    $("schedules-status").textContent = text;
    $("schedules-status").className = failed ? "error" : "";
  }

  async function call(method, path) {
    const init = {method, headers: {"x-csrf-token": CSRF}, credentials: "same-origin"};
    const answer = await fetch("/dashboard/api/schedules" + path, init);
    const data = await answer.json().catch(() => ({}));
    if (!answer.ok) throw new Error(data.message || "the server answered " + answer.status);
    return data;
  }

  // Next fire times are UTC epoch ms: shown in the browser's time zone, UTC on hover.
  function when(ms) {
    if (ms === null) return "—";
    const at = new Date(ms);
    const cell = document.createElement("time");
    cell.dateTime = at.toISOString();
    cell.title = at.toISOString();
    cell.textContent = at.toLocaleString();
    return cell;
  }

  function row(s) {
    const tr = document.createElement("tr");
    tr.dataset.name = s.name;
    const timing = s.cron !== null ? "cron " + s.cron + " (UTC)" : "every " + s.every + " s";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.addEventListener("click", async () => {
      try {
        const {removed} = await call("DELETE", "/" + encodeURIComponent(s.name));
        say("Remove " + s.name + ": " + (removed ? "removed" : "already gone"));
      } catch (error) {
        say("Remove " + s.name + " failed: " + error.message, true);
      }
      await refresh();
    });
    for (const value of [s.name, s.queue, timing, s.message, s.catch_up, when(s.next_fire), remove]) {
      const td = document.createElement("td");
      if (value instanceof Node) td.append(value); else td.textContent = String(value);
      tr.append(td);
    }
    return tr;
  }

  async function refresh() {
    let schedules;
    try {
      ({schedules} = await call("GET", ""));
    } catch (error) {
      say("Schedules could not be read: " + error.message, true);
      return;
    }
    $("schedules").querySelector("tbody").replaceChildren(...schedules.map(row));
    $("schedules-empty").hidden = schedules.length > 0;
  }

  refresh();
  setInterval(refresh, REFRESH_MS);
})();
