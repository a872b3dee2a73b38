-- Delete a deleted queue's status keys (or its dedup keys), one slice of the keyspace per call
-- (SCAN), so no call holds Redis for long; the last call deletes KEYS[1] too. That key is
-- deleted last because it says a sweep is due: a delete_queue interrupted in the middle sweeps
-- again when repeated.
-- KEYS[1] {ns}:{qname}:events (stream) or {ns}:{qname}:dedup-sweep (also routes the call to
-- the queue's node on a cluster, where SCAN sees that node's keys only, the queue's among them)
-- ARGV    SCAN cursor ("0" to start), MATCH pattern of the keys to delete, COUNT
-- Returns {"ok", the next cursor ("0": done), how many keys were deleted}.
local scanned = redis.call("SCAN", ARGV[1], "MATCH", ARGV[2], "COUNT", ARGV[3])
local deleted = 0
if #scanned[2] > 0 then deleted = redis.call("DEL", unpack(scanned[2])) end
if scanned[1] == "0" then deleted = deleted + redis.call("DEL", KEYS[1]) end
return {"ok", scanned[1], deleted}
