-- Sweep a queue's expired messages, a slice at a time (ZSCAN), so a queue nobody receives from
-- cannot grow forever and no call holds Redis for long; and hand over the ids of those that
-- receives dropped (see unexpired in _lib.lua), for the caller to announce.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)   KEYS[3] {ns}:{qname}:expired
-- ARGV    ZSCAN cursor ("0" to start), COUNT (also the most ids handed over from KEYS[3])
-- Returns {"ok", the next cursor ("0": the pass is done), id, id, ...} or {"queueNotFound"}.
local queue = redis.call("HMGET", KEYS[2], "vt", RETENTION)
if not queue[1] then return {"queueNotFound"} end
local out = {"ok", "0"}
for _, id in ipairs(redis.call("SPOP", KEYS[3], ARGV[2])) do out[#out + 1] = id end
local s, us, ms = now()
local line = expiry_line(queue[2], s, us, ms)
if not line then return out end
local scanned = redis.call("ZSCAN", KEYS[1], ARGV[1], "COUNT", ARGV[2])
out[2] = scanned[1]
local gone = {}
for i = 1, #scanned[2], 2 do
  -- Only a visible one: a hidden one may be in flight, its handler running (dropped, its job
  -- would end "expired" and then "done"); it is dropped once visible, by a receive or a sweep.
  if tonumber(scanned[2][i + 1]) <= ms and expired(scanned[2][i], line) then
    gone[#gone + 1] = scanned[2][i]
  end
end
if #gone > 0 then
  expire(KEYS[1], KEYS[2], gone, nil)
  for _, id in ipairs(gone) do out[#out + 1] = id end
end
return out
