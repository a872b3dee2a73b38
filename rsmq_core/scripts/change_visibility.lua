-- Hide a message for `vt` more seconds from now, as RSMQ's changeMessageVisibility does.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)
-- ARGV    id, vt
-- Returns {"ok", 1} (changed), {"ok", 0} (no such message) or {"queueNotFound"}.
if redis.call("HEXISTS", KEYS[2], "vt") == 0 then return {"queueNotFound"} end
if not redis.call("ZSCORE", KEYS[1], ARGV[1]) then return {"ok", 0} end
local _, _, ms = now()
redis.call("ZADD", KEYS[1], ms + tonumber(ARGV[2]) * 1000, ARGV[1])
return {"ok", 1}
