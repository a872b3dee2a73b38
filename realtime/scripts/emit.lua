-- Record status events of one queue: append to its stream, keep each message's last status
-- for a while, and publish for live listeners -- in one step, so a listener never hears of an
-- event that the stream does not hold.
-- KEYS[1]    {ns}:{qname}:events (stream)
-- KEYS[1+i]  {ns}:{qname}:status:{id} (string) of event i
-- ARGV[1] channel {ns}:rt:{qname}:events (marked "P" or "S": see below)   ARGV[2] stream length to keep (about)
-- ARGV[3] seconds a last status stays readable
-- ARGV[3+i] event i: "S" (kept as its message's last status) or "-" (an action on a whole
--           queue, which has no message), then the event as a JSON object without ts
-- Returns the stream ids of the events.
local t = redis.call("TIME")
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- The channel comes marked: "P<name>" to PUBLISH, "S<name>" to SPUBLISH (on a cluster).
local publish = string.sub(ARGV[1], 1, 1) == "S" and "SPUBLISH" or "PUBLISH"
local channel = string.sub(ARGV[1], 2)
local out = {}
for i = 4, #ARGV do
  -- Never decoded: ts goes in before the closing brace, so the rest stays byte for byte.
  local body = string.sub(ARGV[i], 2, -2) .. ',"ts":' .. string.format("%d", ms) .. "}"
  local eid = redis.call("XADD", KEYS[1], "MAXLEN", "~", ARGV[2], "*", "e", body)
  if string.sub(ARGV[i], 1, 1) == "S" then redis.call("SET", KEYS[i - 2], body, "EX", ARGV[3]) end
  redis.call(publish, channel, eid .. " " .. body)
  out[#out + 1] = eid
end
return out
