-- Create a queue, as RSMQ's createQueue does.
-- KEYS[1] {ns}:{qname}:Q (hash)   KEYS[2] {ns}:{qname}:expired (set, see receive.lua)
-- KEYS[3] {ns}:QUEUES (set; absent on a cluster: index.lua)
-- ARGV    vt, delay, maxsize, qname, dedup_window, retention (each "" for the default, which
--         is not stored)
-- Returns {"ok"}, {"queueExists"} or {"indexConflict", key, type} (nothing written).
if KEYS[3] then
  local conflict = index_conflict(KEYS[3])
  if conflict then return conflict end
end
local s = now()
if redis.call("HSETNX", KEYS[1], "vt", ARGV[1]) == 0 then return {"queueExists"} end
redis.call("HSETNX", KEYS[1], "delay", ARGV[2])
redis.call("HSETNX", KEYS[1], "maxsize", ARGV[3])
redis.call("HSETNX", KEYS[1], "created", s)
redis.call("HSETNX", KEYS[1], "modified", s)
if ARGV[5] ~= "" then redis.call("HSETNX", KEYS[1], DEDUP_WINDOW, ARGV[5]) end
if ARGV[6] ~= "" then redis.call("HSETNX", KEYS[1], RETENTION, ARGV[6]) end
-- Left by a queue of the name that Node RSMQ's deleteQueue deleted (it knows nothing of it):
-- ids of that queue's messages, not this one's, so never to be announced as this one's.
redis.call("DEL", KEYS[2])
if KEYS[3] then redis.call("SADD", KEYS[3], ARGV[4]) end
return {"ok"}
