-- Send messages, as RSMQ's sendMessage does, any number in one call.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)
-- ARGV[1] the realtime channel {ns}:rt:{qname} (marked: see notify in _lib.lua), or
-- "" when not in realtime mode
-- ARGV[2] "all" (refuse the whole batch if one message is too long) or "each"
-- ARGV[3] delay in seconds, or "" for the queue's
-- ARGV[4] 22 random id characters per message, joined
-- ARGV[5] the bodies' lengths in bytes, joined with ","   ARGV[6] the bodies, joined
-- (Joined rather than one argument each: redis-py's asyncio client packs each argument in
-- Python, which costs more than the whole script for a large batch.)
-- Returns {"ok", id...} where an id is "!messageTooLong" for a message refused in "each" mode,
-- or {"queueNotFound"}, or {"messageTooLong", index} in "all" mode.
local cfg = redis.call("HMGET", KEYS[2], "delay", "maxsize")
if not cfg[1] then return {"queueNotFound"} end
local maxsize = tonumber(cfg[2])
local delay = ARGV[3] == "" and tonumber(cfg[1]) or tonumber(ARGV[3])
local bodies, at = {}, 1
for size in string.gmatch(ARGV[5], "%d+") do
  bodies[#bodies + 1] = string.sub(ARGV[6], at, at + size - 1)
  at = at + size
end
local n = #bodies
local function too_long(i) return maxsize ~= -1 and #bodies[i] > maxsize end
if ARGV[2] == "all" then
  for i = 1, n do
    if too_long(i) then return {"messageTooLong", i - 1} end
  end
end

local s, us, ms = now()
local score = ms + delay * 1000
-- The id starts with the send time in microseconds, base 36 (RSMQ's layout). Within one call
-- each message takes the next microsecond, so a batch keeps its order in the queue. Only the
-- last two digits change within a batch: the head is computed once (twice on a carry).
local stamp = s * 1000000 + us
local low = stamp % 1296
local high = (stamp - low) / 1296
local heads = {}
local suffixes = ARGV[4]
local out, zadd, hset, sent = {"ok"}, {}, {}, 0
for i = 1, n do
  if too_long(i) then
    out[i + 1] = "!messageTooLong"
  else
    local v = low + sent
    local carry = math.floor(v / 1296)
    local head = heads[carry]
    if not head then
      head = base36(high + carry)
      heads[carry] = head
    end
    local r = v % 1296
    local d1, d0 = math.floor(r / 36) + 1, r % 36 + 1
    local id = head .. string.sub(DIGITS, d1, d1) .. string.sub(DIGITS, d0, d0)
      .. string.sub(suffixes, 22 * i - 21, 22 * i)
    zadd[#zadd + 1] = score
    zadd[#zadd + 1] = id
    hset[#hset + 1] = id
    hset[#hset + 1] = bodies[i]
    sent = sent + 1
    out[i + 1] = id
  end
end
if sent > 0 then
  redis.call("ZADD", KEYS[1], unpack(zadd))
  redis.call("HSET", KEYS[2], unpack(hset))
  redis.call("HINCRBY", KEYS[2], "totalsent", sent)
  -- RSMQ publishes the queue's size after a send; a batch announces itself once.
  if ARGV[1] ~= "" then notify(ARGV[1], redis.call("ZCARD", KEYS[1])) end
end
return out
