// The example app: submit an application, then watch its status over the websocket.
// Message bodies are shown with textContent only: a body may hold HTML or script.
"use strict";
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const queue = document.querySelector('meta[name="queue"]').content;
const list = document.getElementById("applications");
const connection = document.getElementById("connection");
const mine = new Map(); // id -> list item
const tickets = new Map(); // id -> the ticket /submit gave: proof this page may follow it
let socket = null;
let lastEid = null;
let retry = 500;

function setConnection(text, state) {
  connection.textContent = text;
  connection.className = state;
}

// The server says Redis is unavailable (a 503, an "unavailable" frame): not "Live" until
// /api/health answers again.
let queueDown = null;
const UNAVAILABLE = "The queue is unavailable: waiting for it to come back…";

function queueUnavailable() {
  setConnection(UNAVAILABLE, "lost");
  if (queueDown) return;
  queueDown = setInterval(async () => {
    try {
      if (!(await fetch("/api/health")).ok) return;
    } catch (err) {
      return;
    }
    clearInterval(queueDown);
    queueDown = null;
    if (socket && socket.readyState === WebSocket.OPEN) setConnection("Live", "live");
  }, 3000);
}

// Events of one message can arrive out of order (the web app records "queued" while a
// worker may already have it): a later receive count, or a later step of the same receive,
// wins; nothing goes back.
const STEPS = ["queued", "received", "processing", "failed", "retrying", "done", "dead",
               "expired"];
const seen = new Map(); // id -> [rc, step, progress]

function isNewer(event) {
  const [rc, step, progress] = seen.get(event.id) || [-1, -1, -1];
  const s = STEPS.indexOf(event.status);
  const p = event.progress === undefined ? -1 : event.progress;
  if (event.rc !== rc) return event.rc > rc;
  return s > step || (s === step && p >= progress);
}

function show(event) {
  const item = mine.get(event.id);
  if (!item || !isNewer(event)) return;
  seen.set(event.id, [event.rc, STEPS.indexOf(event.status),
                      event.progress === undefined ? -1 : event.progress]);
  const status = item.querySelector(".status");
  status.textContent = event.status +
    (event.progress !== undefined && event.status === "processing"
      ? " " + Math.round(event.progress * 100) + "%" : "");
  status.className = "status " + event.status;
  const when = event.ts ? new Date(event.ts).toLocaleTimeString() : "";
  item.querySelector(".meta").textContent =
    [when, event.rc ? "receive " + event.rc : "", event.worker ? "worker " + event.worker : "",
     event.error ? event.error : ""].filter(Boolean).join(" · ");
}

function subscribe() {
  if (socket && socket.readyState === WebSocket.OPEN && mine.size) {
    const ids = [...mine.keys()];
    const frame = {type: "subscribe", queue: queue, ids: ids,
                   tickets: ids.map((id) => tickets.get(id))};
    if (lastEid) frame.after = lastEid;
    socket.send(JSON.stringify(frame));
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(scheme + "//" + location.host + "/ws");
  socket.onopen = () => {
    retry = 500;
    if (queueDown) setConnection(UNAVAILABLE, "lost"); else setConnection("Live", "live");
    subscribe();
  };
  socket.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    if (frame.type === "error" && frame.error === "unavailable") {
      queueUnavailable();
    } else if (frame.type === "event") {
      if (frame.eid) lastEid = frame.eid;
      show(frame.event);
    }
  };
  socket.onclose = () => {
    setConnection("Connection lost: reconnecting…", "lost");
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  };
}

document.getElementById("apply").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = document.getElementById("message").value;
  const item = document.createElement("li");
  let answer = null;
  let data = {};
  try {
    answer = await fetch("/submit", {
      method: "POST",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify({message: text}),
    });
    data = await answer.json();
  } catch (err) {
    // No answer, or one that is not JSON (a proxy's error page): say so, not a parse error.
  }
  if (!answer || answer.status === 503 || (!answer.ok && !data.message)) {
    if (!answer || answer.status === 503) queueUnavailable();
    item.textContent = "Not sent: " + (answer && answer.status !== 503
      ? "the server answered " + answer.status : "the queue is unavailable") + "; try again";
    list.prepend(item);
    return;
  }
  if (!answer.ok) {
    item.textContent = "Refused: " + data.message;
    list.prepend(item);
    return;
  }
  item.dataset.id = data.id;
  const body = document.createElement("div");
  body.className = "body";
  body.textContent = text;
  const status = document.createElement("span");
  status.className = "status queued";
  status.textContent = "queued";
  const meta = document.createElement("div");
  meta.className = "meta";
  item.append(status, body, meta);
  list.prepend(item);
  mine.set(data.id, item);
  tickets.set(data.id, data.ticket);
  subscribe();
});

connect();
