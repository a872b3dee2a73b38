-- Pause or resume a queue for this project's workers. The mark is a field of the queue's hash
-- that RSMQ never reads (nor names: its fields are attributes, ids and id:rc / id:fr), so
-- Node RSMQ clients send and receive as before, and deleteQueue removes it with the queue.
-- KEYS[1] {ns}:{qname}:Q (hash)
-- ARGV    "1" to pause, "0" to resume; the queue's pause channel (marked: see notify)
-- Returns {"ok", 1 if the state changed else 0} or {"queueNotFound"}. Workers hear "1" or
-- "0" on the channel, so they stop or start at once rather than at their next heartbeat.
if redis.call("HEXISTS", KEYS[1], "vt") == 0 then return {"queueNotFound"} end
local changed
if ARGV[1] == "1" then
  local _, _, ms = now()
  changed = redis.call("HSETNX", KEYS[1], PAUSED, ms)
else
  changed = redis.call("HDEL", KEYS[1], PAUSED)
end
notify(ARGV[2], ARGV[1])
return {"ok", changed}
