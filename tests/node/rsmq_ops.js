"use strict";
// Drives the real `rsmq` npm package for tests/test_node_compat.py.
//
//   NODE_PATH=<repo>/.node/node_modules node rsmq_ops.js HOST PORT
//
// Reads one JSON request per line on stdin and answers each, in order, with one JSON line on
// stdout:
//   {"id": 1, "ns": "t1", "realtime": false,
//    "ops": [{"op": "sendMessage", "args": {"qname": "q", "message": "hi"}}]}
//   -> {"id": 1, "results": [{"ok": "<the message id>"}]}
// An op is any method of RedisSMQ (called as its promise form, e.g. sendMessageAsync) with
// its options object. A failed op answers {"error": {"name": ..., "message": ...}} in its
// place (name is RSMQ's, e.g. "queueNotFound"). {"id": 2, "ns": "t1", "close": true} quits
// that namespace's clients. The process exits when stdin closes.
const readline = require("readline");
const RedisSMQ = require("rsmq");

const host = process.argv[2];
const port = Number(process.argv[3]);
const clients = new Map(); // JSON [ns, realtime] -> {ns, rsmq}

function clientFor(ns, realtime) {
  const key = JSON.stringify([ns, realtime]);
  if (!clients.has(key)) {
    clients.set(key, { ns, rsmq: new RedisSMQ({ host, port, ns, realtime }) });
  }
  return clients.get(key).rsmq;
}

async function closeNamespace(ns) {
  for (const [key, entry] of clients) {
    if (entry.ns === ns) {
      clients.delete(key);
      await entry.rsmq.quitAsync();
    }
  }
}

// RSMQ answers some calls before every command it issued has run (sendMessage in realtime mode
// calls back before its PUBLISH is answered). A PING on the same connection is answered only
// after those commands, so each reply below means "all of this op has happened in Redis".
function settled(rsmq) {
  return new Promise((resolve, reject) => {
    rsmq.redis.ping((err) => (err ? reject(err) : resolve()));
  });
}

async function runOp(rsmq, { op, args }) {
  try {
    const value =
      op === "listQueues" ? await rsmq.listQueuesAsync() : await rsmq[`${op}Async`](args || {});
    await settled(rsmq);
    return { ok: value === undefined ? null : value };
  } catch (err) {
    return { error: { name: err.name, message: err.message } };
  }
}

async function main() {
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const request = JSON.parse(line);
    const results = [];
    if (request.close) {
      await closeNamespace(request.ns);
    } else {
      const rsmq = clientFor(request.ns, Boolean(request.realtime));
      for (const op of request.ops) results.push(await runOp(rsmq, op));
    }
    process.stdout.write(JSON.stringify({ id: request.id, results }) + "\n");
  }
  for (const { rsmq } of clients.values()) await rsmq.quitAsync();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
