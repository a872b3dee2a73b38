-- Change a queue's vt, delay and/or maxsize, as RSMQ's setQueueAttributes does.
-- KEYS[1] {ns}:{qname}:Q (hash)   KEYS[2] {ns}:{qname} (zset)
-- ARGV    vt, delay, maxsize, dedup_window, retention: each a number, or "" to leave it as it is
-- Returns what get_attributes returns, after the change.
local s = now()
if redis.call("HEXISTS", KEYS[1], "vt") == 0 then return {"queueNotFound"} end
redis.call("HSET", KEYS[1], "modified", s)
local names = {"vt", "delay", "maxsize", DEDUP_WINDOW, RETENTION}
for i = 1, 5 do
  if ARGV[i] ~= "" then redis.call("HSET", KEYS[1], names[i], ARGV[i]) end
end
return attributes(KEYS[1], KEYS[2], s)
