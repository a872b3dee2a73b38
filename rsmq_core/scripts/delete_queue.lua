-- Delete a queue and all its messages, as RSMQ's deleteQueue does.
-- KEYS[1] {ns}:{qname}:Q (hash)   KEYS[2] {ns}:{qname} (zset)   KEYS[3] {ns}:{qname}:events
-- (stream)   KEYS[4] {ns}:{qname}:dedup-sweep (says the dedup keys are still to sweep)
-- KEYS[5] {ns}:{qname}:expired (ids of expired messages still to announce: receive.lua)
-- KEYS[6...5+ARGV[2]] {ns}:{qname}:sent:{span} (the retry markers of recent spans: send.lua)
-- KEYS[6+ARGV[2]] {ns}:QUEUES (set; absent on a cluster: index.lua)
-- ARGV    qname, how many sent:{span} keys
-- Returns {"ok" or "queueNotFound", 1 if the queue has an events stream, else 0, 1 if its
-- dedup keys are to be swept, else 0} (then sweep.lua deletes the statuses and the dedup keys,
-- and the key that said so last), or {"indexConflict", key, type} (nothing deleted).
local spans = tonumber(ARGV[2])
local index = KEYS[6 + spans]
if index then
  local conflict = index_conflict(index)
  if conflict then return conflict end
end
-- The queue's hash says whether it ever had dedup keys; it goes now, so a key of its own keeps
-- saying it until the sweep is done (a delete cut short is finished by the next one).
if redis.call("HEXISTS", KEYS[1], DEDUP_USED) == 1 then redis.call("SET", KEYS[4], "1") end
local deleted = redis.call("DEL", KEYS[1], KEYS[2])
for i = 5, 5 + spans do redis.call("DEL", KEYS[i]) end
if index then redis.call("SREM", index, ARGV[1]) end
return {deleted == 0 and "queueNotFound" or "ok", redis.call("EXISTS", KEYS[3]),
  redis.call("EXISTS", KEYS[4])}
