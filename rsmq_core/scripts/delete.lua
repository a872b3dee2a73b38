-- Delete messages, as RSMQ's deleteMessage does, any number in one call, optionally fenced.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)
-- ARGV[1] message ids, joined (each is 32 characters)
-- ARGV[2] per id, the receive count it must still have ("" for any, "0" for never received),
-- joined with ","
-- ARGV[3] "count" to answer only how many were deleted (no id may then be fenced), else ""
-- (Two arguments rather than two per id: redis-py's asyncio client packs each argument in
-- Python, which costs more than the whole script for a large batch.)
-- Returns {"ok", 1 or 0 per id} (1: it was in the queue), {"ok", how many} with "count",
-- or {"queueNotFound"}.
if redis.call("HEXISTS", KEYS[2], "vt") == 0 then return {"queueNotFound"} end
if ARGV[3] == "count" then
  -- Nothing to check per id: ZREM's count is the answer (it counts a repeated id once).
  local ids, drop = split_ids(ARGV[1])
  if #ids == 0 then return {"ok", 0} end
  local deleted = redis.call("ZREM", KEYS[1], unpack(ids))
  redis.call("HDEL", KEYS[2], unpack(drop))
  return {"ok", deleted}
end
return delete_fenced(KEYS[1], KEYS[2], ARGV[1], ARGV[2], {"ok"})
