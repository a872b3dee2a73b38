-- Move messages to another queue in one step: dead-lettering, and redriving them back.
-- KEYS[1] source zset   KEYS[2] source hash   KEYS[3] target zset   KEYS[4] target hash
-- ARGV[1] the target's realtime channel, or "" when not in realtime mode
-- ARGV[2] how many to move, oldest first, when no ids follow
-- then pairs: message id, receive count it must still have ("" for any)
-- A moved message is a new message of the target queue: a new id (the same random part),
-- sent now, visible at once, never received. The target's maxsize is not applied: a
-- message that was accepted once is never lost on its way to a dead-letter queue.
-- Returns {"ok", new id or "" per message} or {"queueNotFound", 1 or 2}.
if redis.call("HEXISTS", KEYS[2], "vt") == 0 then return {"queueNotFound", 1} end
if redis.call("HEXISTS", KEYS[4], "vt") == 0 then return {"queueNotFound", 2} end
local pairs_ = {}
if #ARGV > 2 then
  for i = 3, #ARGV, 2 do pairs_[#pairs_ + 1] = {ARGV[i], ARGV[i + 1]} end
else
  for _, id in ipairs(redis.call("ZRANGE", KEYS[1], 0, tonumber(ARGV[2]) - 1)) do
    pairs_[#pairs_ + 1] = {id, ""}
  end
end
local s, us, ms = now()
local stamp = s * 1000000 + us
local out, moved = {"ok"}, 0
for _, pair in ipairs(pairs_) do
  local id, rc = pair[1], pair[2]
  local body = redis.call("HGET", KEYS[2], id)
  local new = ""
  if body and redis.call("ZSCORE", KEYS[1], id)
      and (rc == "" or redis.call("HGET", KEYS[2], id .. ":rc") == rc) then
    redis.call("ZREM", KEYS[1], id)
    redis.call("HDEL", KEYS[2], id, id .. ":rc", id .. ":fr")
    new = base36(stamp + moved) .. string.sub(id, -22)
    redis.call("ZADD", KEYS[3], ms, new)
    redis.call("HSET", KEYS[4], new, body)
    moved = moved + 1
  end
  out[#out + 1] = new
end
if moved > 0 then
  redis.call("HINCRBY", KEYS[4], "totalsent", moved)
  if ARGV[1] ~= "" then redis.call("PUBLISH", ARGV[1], redis.call("ZCARD", KEYS[3])) end
end
return out
