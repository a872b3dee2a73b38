// The Node side of bench/core.py: times Node RSMQ 0.12 on queues that core.py prepared.
//
// Reads one JSON spec on stdin:
//   {"port": 6379, "ns": "bench", "concurrency": 1 or 50,
//    "warmup": {"qname": "...", "n": 1000},
//    "jobs": [{"op": "send" | "recv_del" | "pop", "qname": "...", "n": 20000}, ...]}
// The warm-up queue must exist and be empty; a recv_del or pop job's queue must hold at
// least n visible messages. Prints {"seconds": {"<op>": elapsed, ...}} on stdout.
//
// Run by core.py with NODE_PATH pointing at the folder that holds the rsmq package.
"use strict";

const RedisSMQ = require("rsmq");

const BODY = "x".repeat(100);

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on("data", (chunk) => chunks.push(chunk));
    process.stdin.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    process.stdin.on("error", reject);
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Node RSMQ loads its Lua scripts after connecting; wait for them, but not forever.
async function waitReady(rsmq) {
  const deadline = Date.now() + 10000;
  while (!(rsmq.receiveMessage_sha1 && rsmq.popMessage_sha1)) {
    if (Date.now() > deadline) throw new Error("Node RSMQ did not load its scripts");
    await sleep(10);
  }
}

// `concurrency` workers share a budget of n calls; each worker awaits its call before the next.
async function runWorkers(n, concurrency, step) {
  let left = n;
  const worker = async () => {
    while (left > 0) {
      left -= 1;
      await step();
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
}

function stepFor(rsmq, op, qname) {
  if (op === "send") {
    return async () => {
      await rsmq.sendMessageAsync({ qname, message: BODY });
    };
  }
  if (op === "recv_del") {
    return async () => {
      const msg = await rsmq.receiveMessageAsync({ qname });
      if (!msg.id) throw new Error(`queue ${qname} ran dry`);
      const deleted = await rsmq.deleteMessageAsync({ qname, id: msg.id });
      if (deleted !== 1) throw new Error(`message ${msg.id} was not deleted`);
    };
  }
  if (op === "pop") {
    return async () => {
      const msg = await rsmq.popMessageAsync({ qname });
      if (!msg.id) throw new Error(`queue ${qname} ran dry`);
    };
  }
  throw new Error(`unknown op ${op}`);
}

async function timed(rsmq, op, qname, n, concurrency) {
  const start = process.hrtime.bigint();
  await runWorkers(n, concurrency, stepFor(rsmq, op, qname));
  return Number(process.hrtime.bigint() - start) / 1e9;
}

async function main() {
  const spec = JSON.parse(await readStdin());
  const rsmq = new RedisSMQ({ host: "127.0.0.1", port: spec.port, ns: spec.ns });
  try {
    await waitReady(rsmq);
    const warm = spec.warmup;
    const half = Math.floor(warm.n / 2);
    await timed(rsmq, "send", warm.qname, warm.n, spec.concurrency);
    await timed(rsmq, "recv_del", warm.qname, half, spec.concurrency);
    await timed(rsmq, "pop", warm.qname, warm.n - half, spec.concurrency);

    const seconds = {};
    for (const job of spec.jobs) {
      seconds[job.op] = await timed(rsmq, job.op, job.qname, job.n, spec.concurrency);
    }
    process.stdout.write(JSON.stringify({ seconds }) + "\n");
  } finally {
    await rsmq.quitAsync();
  }
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
