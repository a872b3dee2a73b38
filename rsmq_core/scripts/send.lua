-- Send messages, as RSMQ's sendMessage does, any number in one call.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)
-- KEYS[3] {ns}:{qname}:sent:{span} (hash: the retry markers of the sends of a 30 s span)
-- KEYS[4] {ns}:{qname}:events (stream) when the send records events (ARGV[8...])
-- KEYS[4 or 5...] {ns}:{qname}:dedup:{dedup id}, one per message that has a dedup id, in order
-- ARGV[1] the realtime channel {ns}:rt:{qname} (marked: see notify in _lib.lua), or
-- "" when not in realtime mode
-- ARGV[2] "all" (refuse the whole batch if one message is too long) or "each"
-- ARGV[3] delay in seconds, or "" for the queue's
-- ARGV[4] 22 random id characters per message, joined
-- ARGV[5] the bodies' lengths in bytes, joined with ","   ARGV[6] the bodies, joined
-- (Joined rather than one argument each: redis-py's asyncio client packs each argument in
-- Python, which costs more than the whole script for a large batch.)
-- ARGV[7] per message "d" (it has a dedup id: the next of the dedup KEYS) or "-", or "" for
-- none; absent, not empty, on a plain send (each argument costs the client)
-- ARGV[8...] to record an event of each message stored (SendEvents in _protocol.py), then wake the
-- workers: the events channel and the realtime channel (both marked), the stream's length
-- (about), a last status's seconds, the prefix of the status keys (the id follows: on a
-- cluster it shares the queue's hash tag), and the head and tail of an event around its id
-- Returns {"ok", id...} where an id is "!messageTooLong" for a message refused in "each" mode
-- and "=" before the id of a duplicate (the first message's), or {"queueNotFound"}, or
-- {"messageTooLong", index} in "all" mode.
local cfg = redis.call("HMGET", KEYS[2], "delay", "maxsize", "totalsent")
if not cfg[1] then return {"queueNotFound"} end
local maxsize = tonumber(cfg[2])
local delay = ARGV[3] == "" and tonumber(cfg[1]) or tonumber(ARGV[3])
local s, us, ms = now()
local score = ms + delay * 1000
-- The count written with the bodies, read with the settings: RSMQ's HINCRBY, one call fewer.
local totalsent = tonumber(cfg[3]) or 0

-- The retry marker. redis-py sends a call again, arguments and all, when its connection drops
-- before the reply comes, and Redis may have run the first try: the retry names the same
-- marker (the call's first 22 random id characters, in the hash of the span the client named
-- when it built the call) and finds it set, so it answers the first try's ids and stores
-- nothing. One HSETNX does both the check and the mark, before anything else is written. The
-- hash lives 90 s from its first marker, at least 60 s after its span's last (a retry comes
-- within seconds), and delete_queue deletes the hashes of the spans around now. Its lifetime
-- is set once, by the call that made it: an EXPIRE every call cost more than an HLEN.
-- Returns what the first try marked, or nil when this is the first try.
local function first_try(tag, value)
  if redis.call("HSETNX", KEYS[3], tag, value) == 1 then
    if redis.call("HLEN", KEYS[3]) == 1 then redis.call("EXPIRE", KEYS[3], 3 * RETRY_SPAN) end
    return nil
  end
  return redis.call("HGET", KEYS[3], tag)
end

-- One message, no dedup id, no event: most calls, on a path of their own (Redis runs every
-- line of a script at each call, and the batch path below cost this one about 10% more).
if ARGV[7] == nil and ARGV[5] ~= "" and not string.find(ARGV[5], ",", 1, true) then
  if maxsize ~= -1 and #ARGV[6] > maxsize then
    -- Unless a retry whose first try stored it (the queue's maxsize cut between): its id.
    local first = redis.call("HGET", KEYS[3], ARGV[4])
    if first then return {"ok", first} end
    if ARGV[2] == "all" then return {"messageTooLong", 0} end
    return {"ok", "!messageTooLong"}
  end
  local id = base36(s * 1000000 + us) .. ARGV[4]
  local first = first_try(ARGV[4], id)
  if first then return {"ok", first} end
  redis.call("ZADD", KEYS[1], score, id)
  redis.call("HSET", KEYS[2], id, ARGV[6], "totalsent", string.format("%d", totalsent + 1))
  if ARGV[1] ~= "" then notify(ARGV[1], redis.call("ZCARD", KEYS[1])) end
  return {"ok", id}
end

local bodies = {}
local at = 1
for size in string.gmatch(ARGV[5], "%d+") do
  bodies[#bodies + 1] = string.sub(ARGV[6], at, at + size - 1)
  at = at + size
end
local n = #bodies
-- The messages refused for their length ("each" mode), by index: true.
local refused = {}
-- Whether this call's marker is set: looked up on a refusal in "all" mode, which a retry
-- whose first try stored them all (the queue's maxsize cut between) must not answer.
local marked
for i = 1, n do
  if maxsize ~= -1 and #bodies[i] > maxsize then
    if ARGV[2] == "all" then
      if marked == nil then marked = redis.call("HEXISTS", KEYS[3], string.sub(ARGV[4], 1, 22)) end
      if marked == 0 then return {"messageTooLong", i - 1} end
    end
    refused[i] = true
  end
end

-- What only dedup ids need is made only for them: a plain send is the path that counts.
local dedup = ARGV[7] ~= nil and ARGV[7] ~= ""
local events = ARGV[8] ~= nil
local window, created, seen, remember, remembered
if dedup then
  local more = redis.call("HMGET", KEYS[2], DEDUP_WINDOW, DEDUP_USED, "created")
  window = tonumber(more[1] or DEFAULT_DEDUP_WINDOW)
  -- Says delete_queue has dedup keys to sweep; written once, as RSMQ never reads it.
  if not more[2] then redis.call("HSET", KEYS[2], DEDUP_USED, "1") end
  created = more[3] or ""
  seen, remember = {}, {}
  -- A dedup key holds "{the queue's created} {id}": one left by a queue of the same name
  -- that was deleted (by Node RSMQ's deleteQueue, which knows nothing of them) is not this
  -- queue's.
  remembered = function(d)
    local v = redis.call("GET", KEYS[d])
    if not v then return false end
    local born, id = string.match(v, "^(%d*) (.*)$")
    return born == created and id
  end
end

-- A reply from a marker that holds the first try's answers, joined.
local function answered(first)
  local again = {"ok"}
  for answer in string.gmatch(first, "[^,]+") do again[#again + 1] = answer end
  return again
end

local stamp = s * 1000000 + us
-- Without dedup ids, which messages are stored depends only on the clock reading and the
-- refusals: the marker holds those ("#", the reading in base 36, and ":" before the indexes
-- refused, if any), marked before the ids are made, and a retry makes the first try's answers
-- again from it (a batch's ids, joined, cost Redis more than the rest of the marker). With
-- dedup ids it holds the answers, marked after.
local retry = false
if not dedup then
  local mark = "#" .. base36(stamp)
  if next(refused) then
    local at = {}
    for i = 1, n do
      if refused[i] then at[#at + 1] = i end
    end
    mark = mark .. ":" .. table.concat(at, ",")
  end
  local first = first_try(string.sub(ARGV[4], 1, 22), mark)
  if first then
    local reading, at = string.match(first, "^#(%w+):?(.*)$")
    if not reading then return answered(first) end
    retry, refused, stamp = true, {}, tonumber(reading, 36)
    for i in string.gmatch(at, "%d+") do refused[tonumber(i)] = true end
  end
end
-- The id starts with the send time in microseconds, base 36 (RSMQ's layout). Within one call
-- each message takes the next microsecond, so a batch keeps its order in the queue. Only the
-- last two digits change within a batch: the head is computed once (twice on a carry).
local low = stamp % 1296
local high = (stamp - low) / 1296
local heads = {}
local suffixes = ARGV[4]
local out, zadd, hset, sent = {"ok"}, {}, {}, 0
local next_key = events and 5 or 4
for i = 1, n do
  local d = false
  local first = false
  if dedup and string.sub(ARGV[7], i, i) == "d" then
    d = next_key
    next_key = next_key + 1
    -- The same id twice in one call: the second is a duplicate of the first.
    first = seen[KEYS[d]] or remembered(d)
  end
  if first then
    out[i + 1] = "=" .. first
  elseif refused[i] then
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
      remember[#remember + 1] = d
    end
  end
end
if retry then return out end
if dedup then
  -- A retry with nothing left to store (its dedup ids found, as the first try left them, or
  -- its messages too long since) still answers what the first try did, if it stored any.
  local tag = string.sub(suffixes, 1, 22)
  local first
  if sent == 0 then
    first = redis.call("HGET", KEYS[3], tag)
  else
    first = first_try(tag, table.concat(out, ",", 2))
  end
  if first then return answered(first) end
end
if sent == 0 then return out end

if dedup then
  for _, d in ipairs(remember) do
    redis.call("SET", KEYS[d], created .. " " .. seen[KEYS[d]], "EX", window)
  end
end
redis.call("ZADD", KEYS[1], unpack(zadd))
hset[#hset + 1] = "totalsent"
hset[#hset + 1] = string.format("%d", totalsent + sent)
redis.call("HSET", KEYS[2], unpack(hset))
if events then
  -- As realtime's emit.lua records an event, for each message stored, then the wake-up: a
  -- worker that hears of a message finds its "queued" before it.
  local ts = ',"ts":' .. string.format("%d", ms) .. "}"
  for i = 2, #out do
    local id = out[i]
    local mark = string.sub(id, 1, 1)
    if mark ~= "!" and mark ~= "=" then
      local event = ARGV[13] .. id .. ARGV[14] .. ts
      -- pcall: the messages are stored by now, and an event that cannot be written (another
      -- kind of key where the stream should be) must not turn the send into an error (a
      -- client told "error" sends again: a duplicate). The message goes on without it.
      local eid = redis.pcall("XADD", KEYS[4], "MAXLEN", "~", ARGV[10], "*", "e", event)
      if type(eid) == "string" then
        redis.call("SET", ARGV[12] .. id, event, "EX", ARGV[11])
        notify(ARGV[8], eid .. " " .. event)
      end
    end
  end
  notify(ARGV[9], redis.call("ZCARD", KEYS[1]))
-- RSMQ publishes the queue's size after a send; a batch announces itself once.
elseif ARGV[1] ~= "" then
  notify(ARGV[1], redis.call("ZCARD", KEYS[1]))
end
return out
