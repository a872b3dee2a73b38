-- Delete a queue and all its messages, as RSMQ's deleteQueue does.
-- KEYS[1] {ns}:{qname}:Q (hash)   KEYS[2] {ns}:{qname} (zset)   KEYS[3] {ns}:QUEUES (set)
-- ARGV    qname
-- Returns {"ok"} or {"queueNotFound"}.
local deleted = redis.call("DEL", KEYS[1], KEYS[2])
redis.call("SREM", KEYS[3], ARGV[1])
if deleted == 0 then return {"queueNotFound"} end
return {"ok"}
