-- Receive (or pop) up to `count` visible messages, as RSMQ's receiveMessage/popMessage do.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)
-- KEYS[3] {ns}:{qname}:expired (set: the ids of expired messages dropped here, see _lib.lua)
-- ARGV[1] visibility timeout in seconds, or "" for the queue's
-- ARGV[2] count
-- ARGV[3] "pop" to remove the messages instead of hiding them, else ""
-- ARGV[4] a channel to announce on (marked: see notify in _lib.lua), or "": "1" if `count` were taken (there may be more),
--         "0 <wait>" if fewer (none is visible now; <wait> as below). In the same step as
--         the receive, so a send that follows it is announced after it, never before.
-- ARGV[5], ARGV[6] (optional) messages to delete first, as delete.lua's ARGV[1] and ARGV[2]:
--         coalesced delete_message calls waiting with coalesced receives ride on their
--         call instead of making one of their own. First, so a message deleted here is
--         never handed out again by the same step.
-- Returns {"ok", wait, now, counts, deleted, id, body, id, body, ...} or {"queueNotFound"}:
-- `wait` is "" when `count` were taken, else the milliseconds until the next message becomes
-- visible, or -1 if the queue holds none; `now` the server's epoch milliseconds; `counts` ""
-- when every message was received for the first time (rc 1, fr `now`: the common case costs
-- nothing to say), else "rc,fr,rc,fr,..." for every message in order; `deleted` one "1" or
-- "0" per id of ARGV[5], as delete.lua answers them ("" when none).
local queue = redis.call("HMGET", KEYS[2], "vt", RETENTION)
local vt = queue[1]
if not vt then return {"queueNotFound"} end
local deleted = ""
if ARGV[5] and ARGV[5] ~= "" then
  deleted = table.concat(delete_fenced(KEYS[1], KEYS[2], ARGV[5], ARGV[6], {}))
end
if ARGV[1] ~= "" then vt = ARGV[1] end
local count, pop = tonumber(ARGV[2]), ARGV[3] == "pop"
local s, us, ms = now()
-- Numbers passed to redis.call are formatted once per argument: format each value once.
local now_text = tostring(ms)
local ids = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ms, "LIMIT", 0, count)
-- A message past the queue's retention is never handed out: dropped in this same step.
local line = expiry_line(queue[2], s, us)
if line and #ids > 0 then ids = unexpired(KEYS[1], KEYS[2], KEYS[3], ids, line, ms, count) end
local out, got = {"ok", "", now_text, "", deleted}, 0
if #ids > 0 then
  -- One read and one write per kind for the whole batch: far cheaper than per-message calls.
  -- The first receive time is read only for messages received before (rarely any).
  local fields = {}
  for i, id in ipairs(ids) do fields[2 * i - 1], fields[2 * i] = id, id .. ":rc" end
  local values = redis.call("HMGET", KEYS[2], unpack(fields))
  local again = {}
  for i = 1, #ids do
    if values[2 * i] then again[#again + 1] = ids[i] .. ":fr" end
  end
  local firsts = #again > 0 and redis.call("HMGET", KEYS[2], unpack(again)) or {}
  local hide, counts, drop, orphans, told = {}, {}, {}, {}, {}
  local hide_at = tostring(ms + tonumber(vt) * 1000)
  local nth_again, tell = 0, #again > 0
  for i, id in ipairs(ids) do
    local body, rc = values[2 * i - 1], 1
    local fr = now_text
    if values[2 * i] then
      nth_again = nth_again + 1
      rc = (tonumber(values[2 * i]) or 0) + 1
      local first_ms = tonumber(firsts[nth_again])
      -- Reformatted, so the reply parses as integers whatever another client wrote.
      if rc > 1 and first_ms then fr = string.format("%d", first_ms) end
    end
    if not body then
      -- A member without a body can only come from outside tampering; receiving it would
      -- hand out an empty message forever, so drop it.
      orphans[#orphans + 1] = id
    else
      local rc_text = rc == 1 and "1" or string.format("%d", rc)
      if pop then
        drop[#drop + 1], drop[#drop + 2], drop[#drop + 3] = id, fields[2 * i], id .. ":fr"
        orphans[#orphans + 1] = id
      else
        hide[#hide + 1], hide[#hide + 2] = hide_at, id
        counts[#counts + 1], counts[#counts + 2] = fields[2 * i], rc_text
        if rc == 1 then counts[#counts + 1], counts[#counts + 2] = id .. ":fr", now_text end
      end
      got = got + 1
      if tell then told[#told + 1], told[#told + 2] = rc_text, fr end
      out[#out + 1], out[#out + 2] = id, body
    end
  end
  if tell then out[4] = table.concat(told, ",") end
  if #hide > 0 then redis.call("ZADD", KEYS[1], unpack(hide)) end
  if #counts > 0 then redis.call("HSET", KEYS[2], unpack(counts)) end
  if #orphans > 0 then redis.call("ZREM", KEYS[1], unpack(orphans)) end
  if #drop > 0 then redis.call("HDEL", KEYS[2], unpack(drop)) end
end
if got > 0 then redis.call("HINCRBY", KEYS[2], "totalrecv", got) end
if got < count then
  local first = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
  out[2] = #first == 0 and -1 or math.max(0, tonumber(first[2]) - ms)
end
if ARGV[4] ~= "" then
  notify(ARGV[4], got < count and ("0 " .. out[2]) or "1")
end
return out
