-- Receive (or pop) up to `count` visible messages, as RSMQ's receiveMessage/popMessage do.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)
-- ARGV[1] visibility timeout in seconds, or "" for the queue's
-- ARGV[2] count
-- ARGV[3] "pop" to remove the messages instead of hiding them, else ""
-- ARGV[4] a channel to announce on, or "": "1" if `count` were taken (there may be more),
--         "0 <wait>" if fewer (none is visible now; <wait> as below). In the same step as
--         the receive, so a send that follows it is announced after it, never before.
-- Returns {"ok", wait, id, body, rc, fr, ...}: `wait` is "" when `count` were taken, else the
-- milliseconds until the next message becomes visible, or -1 if the queue holds none;
-- or {"queueNotFound"}.
local vt = redis.call("HGET", KEYS[2], "vt")
if not vt then return {"queueNotFound"} end
if ARGV[1] ~= "" then vt = ARGV[1] end
local count, pop = tonumber(ARGV[2]), ARGV[3] == "pop"
local _, _, ms = now()
local ids = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ms, "LIMIT", 0, count)
local out, got = {"ok", ""}, 0
if #ids > 0 then
  -- One read and one write per kind for the whole batch: far cheaper than per-message calls.
  local fields, rcs, frs = {}, {}, {}
  for i, id in ipairs(ids) do
    rcs[i], frs[i] = id .. ":rc", id .. ":fr"
    fields[3 * i - 2], fields[3 * i - 1], fields[3 * i] = id, rcs[i], frs[i]
  end
  local values = redis.call("HMGET", KEYS[2], unpack(fields))
  local hide, counts, drop, orphans = {}, {}, {}, {}
  local until_ms = ms + tonumber(vt) * 1000
  for i, id in ipairs(ids) do
    local body = values[3 * i - 2]
    if not body then
      -- A member without a body can only come from outside tampering; receiving it would
      -- hand out an empty message forever, so drop it.
      orphans[#orphans + 1] = id
    else
      local rc = (tonumber(values[3 * i - 1]) or 0) + 1
      local fr = rc > 1 and tonumber(values[3 * i]) or ms
      if pop then
        drop[#drop + 1], drop[#drop + 2], drop[#drop + 3] = id, rcs[i], frs[i]
        orphans[#orphans + 1] = id
      else
        hide[#hide + 1], hide[#hide + 2] = until_ms, id
        counts[#counts + 1], counts[#counts + 2] = rcs[i], rc
        if rc == 1 then counts[#counts + 1], counts[#counts + 2] = frs[i], ms end
      end
      got = got + 1
      out[#out + 1], out[#out + 2], out[#out + 3], out[#out + 4] = id, body, rc, fr
    end
  end
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
