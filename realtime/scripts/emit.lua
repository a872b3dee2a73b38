-- Record status events of one queue: append to its stream, keep each message's last status
-- for a while, and publish for live listeners -- in one step, so a listener never hears of an
-- event that the stream does not hold.
-- KEYS[1]    {ns}:{qname}:events (stream)
-- KEYS[1+i]  {ns}:{qname}:status:{id} (string) of event i
-- ARGV[1] channel {ns}:rt:{qname}:events (marked "P" or "S": see below)   ARGV[2] stream length to keep (about)
-- ARGV[3] seconds a last status stays readable   ARGV[3+i] event i as JSON, without ts
-- Returns the stream ids of the events.
local t = redis.call("TIME")
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- The channel comes marked: "P<name>" to PUBLISH, "S<name>" to SPUBLISH (on a cluster).
local publish = string.sub(ARGV[1], 1, 1) == "S" and "SPUBLISH" or "PUBLISH"
local channel = string.sub(ARGV[1], 2)
local out = {}
for i = 4, #ARGV do
  local event = cjson.decode(ARGV[i])
  event.ts = ms
  local body = cjson.encode(event)
  local eid = redis.call("XADD", KEYS[1], "MAXLEN", "~", ARGV[2], "*", "e", body)
  -- An action on a whole queue (its id "") has no message whose last status it would be.
  if event.id ~= "" then redis.call("SET", KEYS[i - 2], body, "EX", ARGV[3]) end
  redis.call(publish, channel, eid .. " " .. body)
  out[#out + 1] = eid
end
return out
