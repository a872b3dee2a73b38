-- Hide a message for `vt` more seconds from now, as RSMQ's changeMessageVisibility does.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)
-- ARGV    id, vt, receive count the message must still have ("" for any)
-- Returns {"ok", 1} (changed), {"ok", 0} (no such message, or fenced off) or {"queueNotFound"}.
if redis.call("HEXISTS", KEYS[2], "vt") == 0 then return {"queueNotFound"} end
if not redis.call("ZSCORE", KEYS[1], ARGV[1]) then return {"ok", 0} end
if ARGV[3] ~= "" and redis.call("HGET", KEYS[2], ARGV[1] .. ":rc") ~= ARGV[3] then
  return {"ok", 0}
end
local _, _, ms = now()
redis.call("ZADD", KEYS[1], ms + tonumber(ARGV[2]) * 1000, ARGV[1])
return {"ok", 1}
