-- Delete messages, as RSMQ's deleteMessage does, any number in one call, optionally fenced.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)
-- ARGV    pairs: message id, receive count it must still have ("" for any)
-- A fence keeps a worker whose visibility timeout ran out from deleting a message that
-- another worker has received since (its receive count went up).
-- Returns {"ok", 1 or 0 per id} or {"queueNotFound"}.
if redis.call("HEXISTS", KEYS[2], "vt") == 0 then return {"queueNotFound"} end
local out = {"ok"}
for i = 1, #ARGV, 2 do
  local id, rc = ARGV[i], ARGV[i + 1]
  local deleted = 0
  if rc == "" or redis.call("HGET", KEYS[2], id .. ":rc") == rc then
    local removed = redis.call("ZREM", KEYS[1], id)
    local fields = redis.call("HDEL", KEYS[2], id, id .. ":rc", id .. ":fr")
    if removed == 1 and fields > 0 then deleted = 1 end
  end
  out[#out + 1] = deleted
end
return out
