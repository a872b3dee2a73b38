// The example app: submit an application, then watch its status over the websocket.
// Message bodies and results are shown with textContent only: either may hold HTML or script.
"use strict";
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const queue = document.querySelector('meta[name="queue"]').content;
const deadQueue = document.querySelector('meta[name="dead-queue"]').content;
const list = document.getElementById("applications");
const connection = document.getElementById("connection");
const announce = document.getElementById("announce");
const mine = new Map(); // id -> list item
const tickets = new Map(); // id -> the ticket /submit gave: proof this page may follow it
const texts = new Map(); // id -> the body as submitted
const lastEvents = new Map(); // id -> the newest event shown
const eids = new Map(); // id -> the stream id of the last event of it this page saw
let socket = null;
let retry = 500;

// What this browser submitted, in localStorage: a reload or another tab shows the same list
// and resumes it from the last event id each application was seen at (see subscribe).
const STORE = "rsmq-realtime:applications:" + queue;
const KEPT = 50; // the newest; older ones drop off the list
const FINAL = ["done", "dead", "expired"];

function stored() {
  try {
    const apps = JSON.parse(localStorage.getItem(STORE) || "[]");
    return Array.isArray(apps) ? apps.filter((a) => a && typeof a.id === "string") : [];
  } catch (err) {
    return []; // storage off, or not ours: the page still works, it just forgets
  }
}

function eidKey(eid) { return eid.split("-").map(BigInt); }
function eidBefore(a, b) {
  const [x, y] = [eidKey(a), eidKey(b)];
  return x[0] < y[0] || (x[0] === y[0] && x[1] < y[1]);
}

function save() {
  // Merged with what another tab saved meanwhile, so neither drops the other's applications.
  const apps = new Map(stored().map((a) => [a.id, a]));
  for (const id of mine.keys()) {
    apps.set(id, {id: id, ticket: tickets.get(id), text: texts.get(id),
                  event: lastEvents.get(id) || null, eid: eids.get(id) || null});
  }
  const newest = [...apps.values()].sort((a, b) => (a.id < b.id ? 1 : -1)).slice(0, KEPT);
  try {
    localStorage.setItem(STORE, JSON.stringify(newest));
  } catch (err) {
    // Full or forbidden: the list lives on in this page only.
  }
}

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
  // "expired" comes from a worker's sweep, which cannot know the receive count (rc 0): it
  // ends whatever came before, unless the message was done already.
  if (event.status === "expired") return step < STEPS.indexOf("done");
  if (event.rc !== rc) return event.rc > rc;
  return s > step || (s === step && p >= progress);
}

// What a status means for the person who applied, beside the status word itself.
function explain(event) {
  if (event.status === "dead") {
    return "It failed too often and was moved to the dead-letter queue " + deadQueue +
      (event.dead_letter_id ? " (as " + event.dead_letter_id + ")" : "") +
      ". To bring it back, redrive it from " + deadQueue + " to " + queue +
      " on the dashboard (Act on a queue).";
  }
  if (event.status === "expired") {
    return "It was not taken within the queue's retention, so it was dropped undelivered.";
  }
  if (event.status === "retrying" && event.retry_in !== undefined) {
    return "It will be tried again in " + event.retry_in + " s.";
  }
  return "";
}

function show(event, eid, quiet = false) {
  const item = mine.get(event.id);
  if (!item) return;
  if (eid && (!eids.has(event.id) || eidBefore(eids.get(event.id), eid))) {
    eids.set(event.id, eid);
  }
  if (!isNewer(event)) return;
  seen.set(event.id, [event.rc, STEPS.indexOf(event.status),
                      event.progress === undefined ? -1 : event.progress]);
  lastEvents.set(event.id, event);
  const status = item.querySelector(".status");
  const word = event.status +
    (event.progress !== undefined && event.status === "processing"
      ? " " + Math.round(event.progress * 100) + "%" : "");
  status.textContent = word;
  status.className = "status " + event.status.replace(" ", "-");
  const when = event.ts ? new Date(event.ts).toLocaleTimeString() : "";
  item.querySelector(".meta").textContent =
    [when, event.rc ? "receive " + event.rc : "", event.worker ? "worker " + event.worker : ""]
      .filter(Boolean).join(" · ");
  const error = item.querySelector(".error-text");
  error.textContent = event.error ? "Error: " + event.error : "";
  error.hidden = !event.error;
  const next = item.querySelector(".next");
  next.textContent = explain(event);
  next.hidden = !next.textContent;
  // What the handler returned: any JSON, untrusted (it may echo the body), so text only.
  const result = item.querySelector(".result");
  result.hidden = event.status !== "done" || event.result === undefined;
  result.textContent = result.hidden ? "" : "result: " + JSON.stringify(event.result);
  if (quiet) return; // restored from storage: nothing changed to announce
  announce.textContent = "Application " + event.id.slice(-6) + ": " + word +
    (event.error ? ", " + event.error : "") + ".";
}

// The ids still moving, and the stream id to replay from: the oldest last-seen event id among
// them, so nothing since any of them is missed (what was seen already is dropped by isNewer).
// One without an event id yet (only its status was read) means no "after": the server then
// answers each id's last status, which is just as complete.
function subscribe() {
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  const ids = [...mine.keys()].filter((id) =>
    !FINAL.includes((lastEvents.get(id) || {}).status));
  if (!ids.length) return;
  const frame = {type: "subscribe", queue: queue, ids: ids,
                 tickets: ids.map((id) => tickets.get(id) || null)};
  if (ids.every((id) => eids.has(id))) {
    frame.after = ids.map((id) => eids.get(id)).reduce((a, b) => (eidBefore(b, a) ? b : a));
  }
  socket.send(JSON.stringify(frame));
}

function addItem(id, text, ticket) {
  const item = document.createElement("li");
  item.dataset.id = id;
  const status = document.createElement("span");
  status.className = "status queued";
  status.textContent = "queued";
  const body = document.createElement("div");
  body.className = "body";
  body.textContent = text;
  const meta = document.createElement("div");
  meta.className = "meta";
  const error = document.createElement("div");
  error.className = "error-text";
  error.hidden = true;
  const next = document.createElement("div");
  next.className = "next";
  next.hidden = true;
  const result = document.createElement("div"); // the handler's return value, when it has one
  result.className = "result";
  result.hidden = true;
  item.append(status, body, meta, error, next, result);
  list.prepend(item);
  mine.set(id, item);
  texts.set(id, text);
  if (ticket) tickets.set(id, ticket);
  return item;
}

function restore() {
  for (const app of stored().reverse()) { // oldest first: each goes on top
    if (mine.has(app.id)) continue;
    addItem(app.id, typeof app.text === "string" ? app.text : "", app.ticket);
    if (app.eid) eids.set(app.id, app.eid);
    if (app.event && app.event.id === app.id) show(app.event, null, true);
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  // batch=1: each message is an array of frames (several when events pile up)
  socket = new WebSocket(scheme + "//" + location.host + "/ws?batch=1");
  socket.onopen = () => {
    retry = 500;
    if (queueDown) setConnection(UNAVAILABLE, "lost"); else setConnection("Live", "live");
    subscribe();
  };
  socket.onmessage = (message) => {
    for (const frame of JSON.parse(message.data)) {
      if (frame.type === "error" && frame.error === "unavailable") {
        queueUnavailable();
      } else if (frame.type === "event") {
        // A last status read (eid null) comes with the mark to resume it from.
        show(frame.event, frame.eid || frame.mark);
        save();
      }
    }
  };
  socket.onclose = () => {
    setConnection("Connection lost: reconnecting…", "lost");
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  };
}

const field = document.getElementById("message");
const fieldError = document.getElementById("message-error");

function refuseInput(text) {
  fieldError.textContent = text;
  fieldError.hidden = !text;
  field.setAttribute("aria-invalid", text ? "true" : "false");
}

field.addEventListener("input", () => { if (field.value.trim()) refuseInput(""); });

function refusal(data) {
  if (data.error === "messageTooLong") {
    const bytes = new TextEncoder().encode(field.value).length;
    return "Refused: " + data.message + ": " + (data.detail || "the queue's limit") +
      "; yours has " + bytes + " bytes.";
  }
  return "Refused: " + data.message + (data.detail ? " (" + data.detail + ")" : "");
}

document.getElementById("apply").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = field.value;
  if (!text.trim()) { // the server refuses "" too; the page says so before sending
    refuseInput("Write your application first: an empty message is refused.");
    field.focus();
    return;
  }
  refuseInput("");
  const item = document.createElement("li");
  item.className = "refused";
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
    item.textContent = refusal(data);
    list.prepend(item);
    announce.textContent = item.textContent;
    return;
  }
  addItem(data.id, text, data.ticket);
  announce.textContent = "Application " + data.id.slice(-6) + ": queued.";
  save();
  subscribe();
});

// Another tab of this browser submitted: follow its applications here too.
window.addEventListener("storage", (e) => {
  if (e.key !== STORE) return;
  const before = mine.size;
  restore();
  if (mine.size !== before) subscribe();
});

restore();
connect();
