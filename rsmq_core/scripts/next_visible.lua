-- How long until the queue's next message becomes visible, by the server's clock.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)
-- Returns {"ok", ms} (0 when one is visible now), {"ok"} when the queue is empty,
-- or {"queueNotFound"}.
if redis.call("HEXISTS", KEYS[2], "vt") == 0 then return {"queueNotFound"} end
local first = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
if #first == 0 then return {"ok"} end
local _, _, ms = now()
return {"ok", math.max(0, tonumber(first[2]) - ms)}
