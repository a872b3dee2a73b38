-- Send messages, as RSMQ's sendMessage does, any number in one call.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)
-- KEYS[3], KEYS[4] {ns}:{qname}:sent:0 and :1 (hashes: the retry markers' two generations)
-- KEYS[5...] {ns}:{qname}:dedup:{dedup id}, one per message that has a dedup id, in order
-- ARGV[1] the realtime channel {ns}:rt:{qname} (marked: see notify in _lib.lua), or
-- "" when not in realtime mode
-- ARGV[2] "all" (refuse the whole batch if one message is too long) or "each"
-- ARGV[3] delay in seconds, or "" for the queue's
-- ARGV[4] 22 random id characters per message, joined
-- ARGV[5] the bodies' lengths in bytes, joined with ","   ARGV[6] the bodies, joined
-- (Joined rather than one argument each: redis-py's asyncio client packs each argument in
-- Python, which costs more than the whole script for a large batch.)
-- ARGV[7] "1" to keep a retry marker for this call, or "" for none
-- ARGV[8] per message "d" (it has a dedup id: the next of KEYS[5...]) or "-", or "" for none
-- Returns {"ok", id...} where an id is "!messageTooLong" for a message refused in "each" mode
-- and "=" before the id of a duplicate (the first message's), or {"queueNotFound"}, or
-- {"messageTooLong", index} in "all" mode.
local cfg = redis.call("HMGET", KEYS[2], "delay", "maxsize", DEDUP_WINDOW, DEDUP_USED,
  "created")
if not cfg[1] then return {"queueNotFound"} end
-- The retry marker: redis-py sends a call again, arguments and all, when its connection drops
-- before the reply comes, and Redis may have run the first try. The call's first 22 random id
-- characters name it; a try that finds its marker answers what the first one stored instead of
-- storing it again. Markers live only as long as a retry can come: RETRY_SPAN seconds at
-- least, twice that at most, in two hashes of fixed names (so delete_queue deletes them without
-- looking for them) that take turns: the one of this span is emptied when the span begins.
local s, us, ms = now()
local marker = ARGV[7] ~= ""
local tag, epoch, mine, rotate
if marker then
  tag = string.sub(ARGV[4], 1, 22)
  epoch = math.floor(s / RETRY_SPAN)
  mine = 3 + epoch % 2
  local got = redis.call("HMGET", KEYS[mine], tag, "@epoch")
  local done = got[1] or redis.call("HGET", KEYS[7 - mine], tag)
  if done then
    local again = {"ok"}
    for id in string.gmatch(done, "[^,]+") do again[#again + 1] = id end
    return again
  end
  rotate = tonumber(got[2]) ~= epoch
end
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
local window = tonumber(cfg[3] or DEFAULT_DEDUP_WINDOW)
-- A dedup key holds "{the queue's created} {id}": one left by a queue of the same name that
-- was deleted (by Node RSMQ's deleteQueue, which knows nothing of them) is not this queue's.
local created = cfg[5] or ""
local function remembered(d)
  local v = redis.call("GET", KEYS[d])
  if not v then return false end
  local born, id = string.match(v, "^(%d*) (.*)$")
  return born == created and id
end
local seen, deduped, next_key = {}, 0, 5
for i = 1, n do
  local d = false
  local first = false
  if string.sub(ARGV[8], i, i) == "d" then
    d = next_key
    next_key = next_key + 1
    -- The same id twice in one call: the second is a duplicate of the first.
    first = seen[KEYS[d]] or remembered(d)
  end
  if first then
    out[i + 1] = "=" .. first
  elseif too_long(i) then
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
    if d then
      seen[KEYS[d]] = id
      redis.call("SET", KEYS[d], created .. " " .. id, "EX", window)
      deduped = deduped + 1
    end
  end
end
-- Says delete_queue has dedup keys to sweep; written once, as RSMQ never reads it.
if deduped > 0 and not cfg[4] then redis.call("HSET", KEYS[2], DEDUP_USED, "1") end
if marker and sent > 0 then
  local reply = table.concat(out, ",", 2)
  if rotate then
    redis.call("DEL", KEYS[mine])
    redis.call("HSET", KEYS[mine], "@epoch", epoch, tag, reply)
    -- Written from this span's start to its end, read until the next one's end.
    redis.call("EXPIRE", KEYS[mine], 3 * RETRY_SPAN)
  else
    redis.call("HSET", KEYS[mine], tag, reply)
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
