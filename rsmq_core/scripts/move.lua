-- Move messages to another queue in one step: dead-lettering, and redriving them back.
-- KEYS[1] source zset   KEYS[2] source hash   KEYS[3] target zset   KEYS[4] target hash
-- ARGV[1] the target's realtime channel (marked: see notify in _lib.lua), or "" when not realtime
-- ARGV[2] how many to move, oldest first, when no ids follow
-- then pairs: message id, receive count it must still have ("" for any)
-- Returns {"ok", new id or "" per message} or {"queueNotFound", 1 or 2}.
if redis.call("HEXISTS", KEYS[2], "vt") == 0 then return {"queueNotFound", 1} end
if redis.call("HEXISTS", KEYS[4], "vt") == 0 then return {"queueNotFound", 2} end
local picked = pick(KEYS[1], KEYS[2], 3, tonumber(ARGV[2]))
for _, m in ipairs(picked) do
  if m then
    redis.call("ZREM", KEYS[1], m[1])
    redis.call("HDEL", KEYS[2], m[1], m[1] .. ":rc", m[1] .. ":fr")
  end
end
return put(KEYS[3], KEYS[4], picked, ARGV[1])
