-- Look at a queue's messages without receiving them: no score, receive count or first-receive
-- time changes, and no counter moves.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)
-- ARGV    offset (0-based, in score order), count
-- Returns {"ok", now ms, how many messages, paused since (ms, "" when not paused),
--          id, body, rc, fr, visible-at ms, ...} or {"queueNotFound"}.
if redis.call("HEXISTS", KEYS[2], "vt") == 0 then return {"queueNotFound"} end
local _, _, ms = now()
local offset = tonumber(ARGV[1])
local rows = redis.call("ZRANGE", KEYS[1], offset, offset + tonumber(ARGV[2]) - 1, "WITHSCORES")
local out = {"ok", ms, redis.call("ZCARD", KEYS[1]), redis.call("HGET", KEYS[2], PAUSED) or ""}
for i = 1, #rows, 2 do
  local id = rows[i]
  local got = redis.call("HMGET", KEYS[2], id, id .. ":rc", id .. ":fr")
  out[#out + 1] = id
  out[#out + 1] = got[1] or ""
  out[#out + 1] = got[2] or "0"
  out[#out + 1] = got[3] or "0"
  out[#out + 1] = rows[i + 1]
end
return out
