// The dashboard: queue and worker figures pushed every second, and a live chart of
// send -> done latency from the status events. Text only: names come from Redis.
"use strict";
const connection = document.getElementById("connection");
const latencies = []; // [ms, mode] of the last messages done
const subscribed = new Set();
const workerModes = new Map();
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

function showStats(frame) {
  if (frame.error) {
    connection.textContent = "Live, but Redis is unavailable: " + frame.error;
    connection.className = "lost";
    return;
  }
  document.dispatchEvent(new CustomEvent("stats", {detail: frame})); // for actions.js
  const listed = Object.keys(frame.queues).length;
  note(frame.total_queues > listed
    ? `${frame.total_queues} queues: the first ${listed} by name are shown, not the other ` +
      `${frame.total_queues - listed}.` : "");
  fill("queues", Object.entries(frame.queues).map(([name, q]) => {
    const row = document.createElement("tr");
    [name, q.msgs, q.visible, q.hiddenmsgs, q.totalsent, q.totalrecv, q.send_rate,
     q.receive_rate, q.dead, q.retention ? q.retention + " s" : "forever",
     q.totalexpired].forEach((v) => cell(row, v));
    if (!subscribed.has(name)) {
      subscribed.add(name);
      socket.send(JSON.stringify({type: "subscribe", queue: name}));
    }
    return row;
  }));
  fill("workers", frame.workers.map((w) => {
    workerModes.set(w.id, w.mode);
    const row = document.createElement("tr");
    const c = w.counters || {};
    [w.id, w.mode, w.queues.join(", "), w.concurrency, c.done, c.failed, c.receives,
     c.empty_receives].forEach((v) => cell(row, v));
    return row;
  }));
}

// Said, never silently ignored: queues past what the page lists or the socket may follow.
const notes = {stats: "", error: ""};
function note(text, kind = "stats") {
  notes[kind] = text;
  const shown = document.getElementById("queues-note");
  shown.textContent = [notes.stats, notes.error].filter(Boolean).join(" ");
  shown.hidden = !shown.textContent;
}

function showError(frame) {
  if (frame.error === "tooManyQueues") {
    note("Latency is drawn for the first queues only: " + frame.message + ".", "error");
  } else {
    connection.textContent = "Live, but refused: " + frame.message;
    connection.className = "lost";
  }
}

function sentMs(id) { return parseInt(id.slice(0, 10), 36) / 1000; }

function showEvent(event) {
  if (event.status !== "done" || !event.ts) return;
  latencies.push([event.ts - sentMs(event.id), workerModes.get(event.worker) || "?"]);
  if (latencies.length > 200) latencies.shift();
  draw();
}

function draw() {
  const canvas = document.getElementById("latency");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!latencies.length) return;
  const max = Math.max(10, ...latencies.map(([ms]) => ms));
  const step = canvas.width / 200;
  latencies.forEach(([ms, mode], i) => {
    const h = (ms / max) * (canvas.height - 20);
    ctx.fillStyle = mode === "realtime" ? "#2563eb" : "#d97706";
    ctx.fillRect(i * step, canvas.height - h, Math.max(1, step - 1), h);
  });
  ctx.fillStyle = "#1b1b1b";
  ctx.fillText(Math.round(max) + " ms", 4, 12);
  const sorted = latencies.map(([ms]) => ms).sort((a, b) => a - b);
  const p = (q) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]);
  document.getElementById("latency-summary").textContent =
    `last ${sorted.length} messages: p50 ${p(0.5)} ms, p99 ${p(0.99)} ms ` +
    "(blue: realtime workers, orange: polling)";
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(scheme + "//" + location.host + "/ws");
  socket.onopen = () => {
    retry = 500;
    connection.textContent = "Live";
    connection.className = "live";
    subscribed.clear();
    socket.send(JSON.stringify({type: "watch"}));
  };
  socket.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    if (frame.type === "stats") {
      showStats(frame);
      showCompare(frame);  // compare.js
    }
    else if (frame.type === "event") showEvent(frame.event);
    else if (frame.type === "error") showError(frame);
  };
  socket.onclose = () => {
    connection.textContent = "Connection lost: reconnecting…";
    connection.className = "lost";
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  };
}

connect();
