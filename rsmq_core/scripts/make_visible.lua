-- Make a hidden or delayed message visible now ("retry now") and wake the workers, as a
-- send does: a realtime worker sleeping until the message's old visible-at time hears it.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)
-- ARGV    id; the realtime channel {ns}:rt:{qname} (marked: see notify)
-- Returns {"ok", 1} (made visible), {"ok", 0} (no such message) or {"queueNotFound"}.
if redis.call("HEXISTS", KEYS[2], "vt") == 0 then return {"queueNotFound"} end
if not redis.call("ZSCORE", KEYS[1], ARGV[1]) then return {"ok", 0} end
local _, _, ms = now()
redis.call("ZADD", KEYS[1], ms, ARGV[1])
notify(ARGV[2], redis.call("ZCARD", KEYS[1]))
return {"ok", 1}
