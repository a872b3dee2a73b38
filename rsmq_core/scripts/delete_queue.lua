-- Delete a queue and all its messages, as RSMQ's deleteQueue does.
-- KEYS[1] {ns}:{qname}:Q (hash)   KEYS[2] {ns}:{qname} (zset)   KEYS[3] {ns}:QUEUES (set;
-- absent on a cluster: index.lua)
-- ARGV    qname
-- Returns {"ok"} or {"queueNotFound"}.
local deleted = redis.call("DEL", KEYS[1], KEYS[2])
if KEYS[3] then redis.call("SREM", KEYS[3], ARGV[1]) end
if deleted == 0 then return {"queueNotFound"} end
return {"ok"}
