-- Shared helpers, prepended to every script of this folder when it is loaded.

-- The field of a queue's hash that marks it paused (see pause.lua); RSMQ never reads it.
local PAUSED = "paused"
-- Idempotent sends: the queue's dedup window (seconds; the default when the field is absent),
-- and the mark that the queue has dedup keys for delete_queue to sweep. RSMQ reads neither.
local DEDUP_WINDOW = "dedup_window"
local DEFAULT_DEDUP_WINDOW = 300
local DEDUP_USED = "dedup_used"
-- The seconds of one hash of sends' retry markers (see send.lua); RETRY_SPAN in _protocol.py.
local RETRY_SPAN = 30
-- Retention: the seconds after its send from which a message is never delivered (absent or 0:
-- kept forever, as RSMQ keeps it), and the count of messages dropped for it. RSMQ reads neither.
local RETENTION = "retention"
local TOTAL_EXPIRED = "totalexpired"
-- Expired messages one receive drops at most: a queue left unread for long cannot make one
-- call hold Redis for long (the next receive, or a worker's sweep, drops the rest).
local MAX_EXPIRED_DROPS = 1000
-- Ids of messages receives dropped, kept in {ns}:{qname}:expired for a worker's sweep to
-- announce ("expired" status events); beyond this many, with no worker sweeping, no more are
-- kept, so that set cannot grow forever either.
local MAX_EXPIRED_KEPT = 10000

-- The server's clock, never the client's: seconds, microseconds and epoch milliseconds.
local function now()
  local t = redis.call("TIME")
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s, us, s * 1000 + math.floor(us / 1000)
end

-- The queue's attributes in RSMQ's order, then msgs and hiddenmsgs; false if there is no queue.
local function attributes(hash, zset, s)
  local a = redis.call("HMGET", hash, "vt", "delay", "maxsize", "totalrecv", "totalsent",
    "created", "modified", DEDUP_WINDOW, RETENTION, TOTAL_EXPIRED)
  if not a[1] then return false end
  local out = {"ok"}
  for i = 1, 7 do out[i + 1] = a[i] or "0" end
  out[9] = redis.call("ZCARD", zset)
  -- RSMQ counts hidden messages from the start of the current second.
  out[10] = redis.call("ZCOUNT", zset, s .. "000", "+inf")
  out[11] = a[8] or DEFAULT_DEDUP_WINDOW
  out[12] = a[9] or "0"
  out[13] = a[10] or "0"
  return out
end

-- Publish on a channel as the client names it: "P<name>" with RSMQ's classic PUBLISH, "S<name>"
-- with SPUBLISH (sharded pub/sub, on a cluster: heard only on the master of the queue's slot).
-- A mark of its own, never part of the name: a namespace may begin with any character.
local function notify(channel, message)
  local verb = string.sub(channel, 1, 1) == "S" and "SPUBLISH" or "PUBLISH"
  return redis.call(verb, string.sub(channel, 2), message)
end

-- RSMQ's id starts with the send time in microseconds, base 36.
local DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
local function base36(x)
  local out = ""
  repeat
    local d = x % 36
    out = string.sub(DIGITS, d + 1, d + 1) .. out
    x = (x - d) / 36
  until x == 0
  return out
end

-- Retention (see RETENTION above).

-- When a message was sent, in epoch ms, from its id (the wire format's `sent`); nil for an id
-- not in RSMQ's form (written by someone else), which then never expires.
local function sent_ms(id)
  local us = tonumber(string.sub(id, 1, 10), 36)
  return us and us / 1000
end

-- The epoch ms at or before which a message sent has expired, for a queue whose retention is
-- `retention` (a hash field's text, or nil), at the server time `s`, `us`: nil when the queue
-- keeps messages forever. To the microsecond, as ids are: a message is never handed out a
-- fraction of a millisecond past its retention.
local function expiry_line(retention, s, us)
  local seconds = tonumber(retention) or 0
  if seconds <= 0 then return nil end
  return (s * 1000000 + us) / 1000 - seconds * 1000
end

local function expired(id, line)
  local sent = sent_ms(id)
  return sent ~= nil and sent <= line
end

-- Drop expired messages (ids) and count them; with `expired_key` (the queue's set of expired
-- ids), remember their ids there for a sweep to announce. Returns how many were dropped.
local function expire(zset, hash, gone, expired_key)
  local fields = {}
  for i, id in ipairs(gone) do
    fields[3 * i - 2], fields[3 * i - 1], fields[3 * i] = id, id .. ":rc", id .. ":fr"
  end
  local n = redis.call("ZREM", zset, unpack(gone))
  redis.call("HDEL", hash, unpack(fields))
  if n > 0 then redis.call("HINCRBY", hash, TOTAL_EXPIRED, n) end
  if expired_key and redis.call("SCARD", expired_key) < MAX_EXPIRED_KEPT then
    redis.call("SADD", expired_key, unpack(gone))
  end
  return n
end

-- The visible messages a receive of `count` takes, `ids` being the first it read: expired
-- ones are dropped and as many read in their place, up to MAX_EXPIRED_DROPS per call.
local function unexpired(zset, hash, expired_key, ids, line, ms, count)
  local keep, dropped = {}, 0
  while true do
    local gone = {}
    for _, id in ipairs(ids) do
      if expired(id, line) then gone[#gone + 1] = id else keep[#keep + 1] = id end
    end
    if #gone == 0 then return keep end
    dropped = dropped + expire(zset, hash, gone, expired_key)
    if #keep >= count or dropped >= MAX_EXPIRED_DROPS then return keep end
    -- The kept ones are still the first visible: read on past them.
    ids = redis.call("ZRANGEBYSCORE", zset, "-inf", ms, "LIMIT", #keep, count - #keep)
  end
end

-- Moving messages between queues (move.lua in one step; move_out.lua then move_in.lua on a
-- cluster, where the two queues live in different slots).

-- The messages ARGV[from..] names as (id, receive count it must still have, "" for any)
-- pairs or, when none are named, the oldest `count`: per message {id, body, receive count}
-- ("0" when never received), or false for one that is not there (or was received since, or
-- has expired: a move never gives an expired message a new life in another queue).
local function pick(zset, hash, from, count)
  local line = expiry_line(redis.call("HGET", hash, RETENTION), now())
  local wanted = {}
  if #ARGV >= from then
    for i = from, #ARGV, 2 do wanted[#wanted + 1] = {ARGV[i], ARGV[i + 1]} end
  else
    for _, id in ipairs(redis.call("ZRANGE", zset, 0, count - 1)) do
      wanted[#wanted + 1] = {id, ""}
    end
  end
  local out = {}
  for i, w in ipairs(wanted) do
    local id, fence = w[1], w[2]
    local got = redis.call("HMGET", hash, id, id .. ":rc")
    local rc = got[2] or "0"
    if got[1] and redis.call("ZSCORE", zset, id) and (fence == "" or rc == fence)
        and not (line and expired(id, line)) then
      out[i] = {id, got[1], rc}
    else
      out[i] = false
    end
  end
  return out
end

-- Store messages as send.lua stores a send's: each id is the server's clock in microseconds,
-- base 36 (one microsecond apart, so they keep their order), then its random 22 characters;
-- visible `delay` ms from now; counted in totalsent; the queue's size published on `channel`
-- ("" for none) once. `items[i]` is {22 random characters, body}, or false for none. Returns
-- {"ok", new id or "" per item}.
local function store(zset, hash, items, delay, channel)
  local s, us, ms = now()
  local stamp = s * 1000000 + us
  local out, stored = {"ok"}, 0
  for i, m in ipairs(items) do
    local new = ""
    if m then
      new = base36(stamp + stored) .. m[1]
      redis.call("ZADD", zset, ms + delay, new)
      redis.call("HSET", hash, new, m[2])
      stored = stored + 1
    end
    out[i + 1] = new
  end
  if stored > 0 then
    redis.call("HINCRBY", hash, "totalsent", stored)
    if channel ~= "" then notify(channel, redis.call("ZCARD", zset)) end
  end
  return out
end

-- Adds picked messages to a queue as new messages: a new id (the same random part), sent
-- now, visible at once, never received. The target's maxsize is not applied: a message that
-- was accepted once is never lost on its way to a dead-letter queue. Returns {"ok", new id or
-- "" per message}.
local function put(zset, hash, picked, channel)
  local items = {}
  for i, m in ipairs(picked) do items[i] = m and {string.sub(m[1], -22), m[2]} end
  return store(zset, hash, items, 0, channel)
end

-- Deleting messages by id (delete.lua, and the deletes that ride on a coalesced receive).

-- The ids joined in one argument (each is 32 characters) as a list, and the ZSET member and
-- three hash fields of each, in order, for HDEL.
local function split_ids(joined)
  local ids, drop = {}, {}
  for i = 1, #joined / 32 do
    local id = string.sub(joined, 32 * i - 31, 32 * i)
    ids[i] = id
    drop[3 * i - 2], drop[3 * i - 1], drop[3 * i] = id, id .. ":rc", id .. ":fr"
  end
  return ids, drop
end

-- Delete the messages `joined` names, each only while its receive count is still the one
-- `fences` gives for it ("" for any, "0" for never received; joined with ","): a worker whose
-- visibility timeout ran out cannot delete a message another worker has received since.
-- Appends 1 or 0 per id to `out` (1: it was in the queue) and returns `out`. The queue must
-- exist.
local function delete_fenced(zset, hash, joined, fences, out)
  local ids, drop = split_ids(joined)
  if #ids == 0 then return out end
  local wanted, fenced = {}, false
  for fence in string.gmatch(fences .. ",", "([^,]*),") do
    wanted[#wanted + 1] = fence
    if fence ~= "" then fenced = true end
  end
  -- Every send writes the body and the ZSET member in one step and every delete removes
  -- both, so the body says whether the message is there: no call per id (each costs more
  -- than the rest of the work for it). The receive count is read only when a fence needs it.
  local fields = {}
  for i, id in ipairs(ids) do
    if fenced then fields[2 * i - 1], fields[2 * i] = id, drop[3 * i - 1] else fields[i] = id end
  end
  local values = redis.call("HMGET", hash, unpack(fields))
  local step = fenced and 2 or 1
  local members, gone, seen = {}, {}, {}
  for i, id in ipairs(ids) do
    local fence = wanted[i] or ""
    local deleted = 0
    if not seen[id] and (fence == "" or (values[step * i] or "0") == fence) then
      seen[id] = true
      members[#members + 1] = id
      gone[#gone + 1], gone[#gone + 2], gone[#gone + 3] = id, drop[3 * i - 1], drop[3 * i]
      if values[step * i - step + 1] then deleted = 1 end
    end
    out[#out + 1] = deleted
  end
  if #members > 0 then
    redis.call("ZREM", zset, unpack(members))
    redis.call("HDEL", hash, unpack(gone))
  end
  return out
end

-- The queue index {ns}:QUEUES must be a set, or absent: a key of another type there is someone
-- else's, and is reported ({"indexConflict", key, its type}), never written to or deleted.
-- False when the index is fine.
local function index_conflict(index)
  local kind = redis.call("TYPE", index).ok
  if kind == "set" or kind == "none" then return false end
  return {"indexConflict", index, kind}
end
