-- Delete a queue and all its messages, as RSMQ's deleteQueue does.
-- KEYS[1] {ns}:{qname}:Q (hash)   KEYS[2] {ns}:{qname} (zset)   KEYS[3] {ns}:{qname}:events
-- (stream)   KEYS[4] {ns}:QUEUES (set; absent on a cluster: index.lua)
-- ARGV    qname
-- Returns {"ok" or "queueNotFound", 1 if the queue has an events stream, else 0} (then
-- sweep.lua deletes the statuses, and the stream last), or {"indexConflict", key, type}
-- (nothing deleted).
if KEYS[4] then
  local conflict = index_conflict(KEYS[4])
  if conflict then return conflict end
end
local deleted = redis.call("DEL", KEYS[1], KEYS[2])
if KEYS[4] then redis.call("SREM", KEYS[4], ARGV[1]) end
return {deleted == 0 and "queueNotFound" or "ok", redis.call("EXISTS", KEYS[3])}
