-- Send messages, as RSMQ's sendMessage does, any number in one call.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)
-- ARGV[1] the realtime channel {ns}:rt:{qname}, or "" when not in realtime mode
-- ARGV[2] "all" (refuse the whole batch if one message is too long) or "each"
-- then per message: delay in seconds ("" for the queue's), 22 random id characters, body
-- Returns {"ok", id...} where an id is "!messageTooLong" for a message refused in "each" mode,
-- or {"queueNotFound"}, or {"messageTooLong", index} in "all" mode.
local cfg = redis.call("HMGET", KEYS[2], "delay", "maxsize")
if not cfg[1] then return {"queueNotFound"} end
local qdelay, maxsize = tonumber(cfg[1]), tonumber(cfg[2])
local n = (#ARGV - 2) / 3
local function too_long(i) return maxsize ~= -1 and #ARGV[2 + 3 * i] > maxsize end
if ARGV[2] == "all" then
  for i = 1, n do
    if too_long(i) then return {"messageTooLong", i - 1} end
  end
end

local s, us, ms = now()
-- RSMQ's id starts with the send time in microseconds, base 36. Within one call each message
-- takes the next microsecond, so a batch keeps its order in the queue.
local stamp = s * 1000000 + us

local out, sent = {"ok"}, 0
for i = 1, n do
  if too_long(i) then
    out[i + 1] = "!messageTooLong"
  else
    local delay = ARGV[3 * i] == "" and qdelay or tonumber(ARGV[3 * i])
    local id = base36(stamp + sent) .. ARGV[3 * i + 1]
    redis.call("ZADD", KEYS[1], ms + delay * 1000, id)
    redis.call("HSET", KEYS[2], id, ARGV[3 * i + 2])
    sent = sent + 1
    out[i + 1] = id
  end
end
if sent > 0 then
  redis.call("HINCRBY", KEYS[2], "totalsent", sent)
  -- RSMQ publishes the queue's size after a send; a batch announces itself once.
  if ARGV[1] ~= "" then redis.call("PUBLISH", ARGV[1], redis.call("ZCARD", KEYS[1])) end
end
return out
