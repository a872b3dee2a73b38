// The dashboard: queue and worker figures pushed every second, and a chart of send -> done
// latency, all from one snapshot of what workers wrote to Redis (web/dashboard.py), so no two
// parts of the page disagree. Text only: names come from Redis.
"use strict";
const connection = document.getElementById("connection");
let socket = null;
let retry = 500;

function cell(row, value) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "—" : String(value);
  row.append(td);
}

function fill(tableId, rows) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren(...rows);
}

// A result is untrusted (a handler may echo a body): text only, never HTML.
let shownResults = "";

function showResults(results) {
  // Redrawn only when they change: the list is a live region, read out on each change.
  const key = JSON.stringify(results);
  if (key === shownResults) return;
  shownResults = key;
  const list = document.getElementById("results");
  list.replaceChildren(...results.map((r) => {
    const item = document.createElement("li");
    item.textContent = r.queue + "/" + r.id + ": " + JSON.stringify(r.result);
    return item;
  }));
  document.getElementById("results-none").hidden = results.length > 0;
}

function showStats(frame) {
  if (frame.error) {
    connection.textContent = "Live, but Redis is unavailable: " + frame.error;
    connection.className = "lost";
    return;
  }
  document.dispatchEvent(new CustomEvent("stats", {detail: frame})); // for actions.js
  showResults(frame.results);
  const listed = Object.keys(frame.queues).length;
  note(frame.total_queues > listed
    ? `${frame.total_queues} queues: the first ${listed} by name are shown, not the other ` +
      `${frame.total_queues - listed}.` : "");
  fill("queues", Object.entries(frame.queues).map(([name, q]) => {
    const row = document.createElement("tr");
    [name, q.msgs, q.visible, q.hiddenmsgs, q.totalsent, q.totalrecv, q.send_rate,
     q.receive_rate, q.done, q.failed, q.dead, q.retention ? q.retention + " s" : "forever",
     q.totalexpired].forEach((v) => cell(row, v));
    return row;
  }));
  fill("workers", frame.workers.map((w) => {
    const row = document.createElement("tr");
    const c = w.counters || {};
    [w.id, w.mode, w.queues.join(", "), w.concurrency, c.done, c.failed, c.receives,
     c.empty_receives].forEach((v) => cell(row, v));
    return row;
  }));
  const total = Object.values(frame.queues).reduce((sum, q) => sum + (q.done || 0), 0);
  draw(frame.done || [], total);
}

// Said, never silently ignored: queues past what the page lists.
function note(text) {
  const shown = document.getElementById("queues-note");
  shown.textContent = text;
  shown.hidden = !shown.textContent;
}

function showError(frame) {
  connection.textContent = "Live, but refused: " + frame.message;
  connection.className = "lost";
}

function draw(latencies, total) {
  const canvas = document.getElementById("latency");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const summary = document.getElementById("latency-summary");
  if (!latencies.length) {
    summary.textContent = `${total} messages done on the queues listed; none charted yet ` +
      "(workers report at each heartbeat).";
    return;
  }
  const max = Math.max(10, ...latencies.map(([, ms]) => ms));
  const step = canvas.width / 200;
  latencies.forEach(([, ms, mode], i) => {
    const h = (ms / max) * (canvas.height - 20);
    ctx.fillStyle = mode === "realtime" ? "#2563eb" : "#d97706";
    ctx.fillRect(i * step, canvas.height - h, Math.max(1, step - 1), h);
  });
  ctx.fillStyle = "#1b1b1b";
  ctx.fillText(Math.round(max) + " ms", 4, 12);
  // In words per mode too: the bars' colours are not the only way to tell the modes apart.
  const percentiles = (rows) => {
    const sorted = rows.map(([, ms]) => ms).sort((a, b) => a - b);
    const p = (q) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]);
    return `p50 ${p(0.5)} ms, p99 ${p(0.99)} ms`;
  };
  const modes = [["realtime", "blue"], ["polling", "orange"]].map(([mode, colour]) => {
    const rows = latencies.filter(([, , m]) => m === mode);
    return rows.length ? `${mode} (${colour}): ${rows.length}, ${percentiles(rows)}` : "";
  }).filter(Boolean);
  summary.textContent = `${total} messages done on the queues listed; the last ` +
    `${latencies.length}: ${percentiles(latencies)}; ${modes.join("; ")}`;
}

// Each cell carries its column's name: at phone width the tables stack, a card per row with
// each value named, instead of scrolling sideways (style.css).
function labelCells(table) {
  const names = [...table.querySelectorAll("thead th")].map((th) => th.textContent);
  for (const row of table.querySelectorAll("tbody tr")) {
    [...row.children].forEach((td, i) => { if (names[i]) td.dataset.label = names[i]; });
  }
}
for (const table of document.querySelectorAll("table")) {
  labelCells(table);
  new MutationObserver(() => labelCells(table)).observe(table.querySelector("tbody"),
                                                        {childList: true});
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  // batch=1: each message is an array of frames (several when events pile up)
  socket = new WebSocket(scheme + "//" + location.host + "/ws?batch=1");
  socket.onopen = () => {
    retry = 500;
    connection.textContent = "Live";
    connection.className = "live";
    socket.send(JSON.stringify({type: "watch"}));
  };
  socket.onmessage = (message) => {
    for (const frame of JSON.parse(message.data)) {
      if (frame.type === "stats") {
        showStats(frame);
        showCompare(frame);  // compare.js
      }
      else if (frame.type === "error") showError(frame);
    }
  };
  socket.onclose = () => {
    connection.textContent = "Connection lost: reconnecting…";
    connection.className = "lost";
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  };
}

connect();
