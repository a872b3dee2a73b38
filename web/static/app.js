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

// Events of one message can arrive out of order (the web app records "queued" while a
// worker may already have it): a later receive count, or a later step of the same receive,
// wins; nothing goes back.
const STEPS = ["queued", "received", "processing", "failed", "retrying", "done", "dead"];
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
  socket.onopen = () => { retry = 500; setConnection("Live", "live"); subscribe(); };
  socket.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    if (frame.type === "event") {
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
  const answer = await fetch("/submit", {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify({message: text}),
  });
  const data = await answer.json();
  const item = document.createElement("li");
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
