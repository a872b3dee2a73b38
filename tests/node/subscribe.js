"use strict";
// A realtime RSMQ consumer's subscription, for tests/test_node_compat.py: SUBSCRIBE with the
// `redis` client that rsmq itself depends on (resolved from rsmq's own folder).
//
//   NODE_PATH=<repo>/.node/node_modules node subscribe.js HOST PORT CHANNEL...
//
// Prints {"ready": true, "redis": "<redis client version>"} once every channel is subscribed,
// then {"channel": ..., "message": ...} for each message. Exits when stdin closes.
const path = require("path");

const rsmqDir = path.dirname(require.resolve("rsmq/package.json"));
const redisPath = require.resolve("redis", { paths: [rsmqDir] });
const redis = require(redisPath);
const redisVersion = require(path.join(path.dirname(redisPath), "package.json")).version;

const [host, port, ...channels] = process.argv.slice(2);
const client = redis.createClient({ host, port: Number(port) });
const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

let subscribed = 0;
client.on("error", (err) => {
  console.error(err);
  process.exit(1);
});
client.on("subscribe", () => {
  subscribed += 1;
  if (subscribed === channels.length) print({ ready: true, redis: redisVersion });
});
client.on("message", (channel, message) => print({ channel, message }));
client.subscribe(...channels);

process.stdin.on("end", () => client.quit());
process.stdin.resume();
