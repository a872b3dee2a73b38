-- Remove every message from a queue, keeping the queue, its settings and its counters.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)
-- Returns {"ok", how many were removed} or {"queueNotFound"}.
if redis.call("HEXISTS", KEYS[2], "vt") == 0 then return {"queueNotFound"} end
local ids = redis.call("ZRANGE", KEYS[1], 0, -1)
for i = 1, #ids, 1000 do
  local fields = {}
  for j = i, math.min(i + 999, #ids) do
    fields[#fields + 1] = ids[j]
    fields[#fields + 1] = ids[j] .. ":rc"
    fields[#fields + 1] = ids[j] .. ":fr"
  end
  redis.call("HDEL", KEYS[2], unpack(fields))
end
redis.call("DEL", KEYS[1])
return {"ok", #ids}
