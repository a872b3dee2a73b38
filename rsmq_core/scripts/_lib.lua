-- Shared helpers, prepended to every script of this folder when it is loaded.

-- The server's clock, never the client's: seconds, microseconds and epoch milliseconds.
local function now()
  local t = redis.call("TIME")
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s, us, s * 1000 + math.floor(us / 1000)
end

-- The queue's attributes in RSMQ's order, then msgs and hiddenmsgs; false if there is no queue.
local function attributes(hash, zset, s)
  local a = redis.call("HMGET", hash, "vt", "delay", "maxsize", "totalrecv", "totalsent",
    "created", "modified")
  if not a[1] then return false end
  local out = {"ok"}
  for i = 1, 7 do out[i + 1] = a[i] or "0" end
  out[9] = redis.call("ZCARD", zset)
  -- RSMQ counts hidden messages from the start of the current second.
  out[10] = redis.call("ZCOUNT", zset, s .. "000", "+inf")
  return out
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
