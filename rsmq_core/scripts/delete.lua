-- Delete messages, as RSMQ's deleteMessage does, any number in one call.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)
-- ARGV    message ids
-- Returns {"ok", 1 or 0 per id} or {"queueNotFound"}.
if redis.call("HEXISTS", KEYS[2], "vt") == 0 then return {"queueNotFound"} end
local out = {"ok"}
for i, id in ipairs(ARGV) do
  local removed = redis.call("ZREM", KEYS[1], id)
  local fields = redis.call("HDEL", KEYS[2], id, id .. ":rc", id .. ":fr")
  out[i + 1] = (removed == 1 and fields > 0) and 1 or 0
end
return out
