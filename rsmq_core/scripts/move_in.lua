-- The second half of a move on a cluster: add what move_out.lua read to the target queue.
-- KEYS[1] target zset   KEYS[2] target hash
-- ARGV[1] the target's realtime channel (marked, see notify), or ""; then pairs: old id ("" to skip), body
-- Returns {"ok", new id or "" per message} or {"queueNotFound", 2}.
if redis.call("HEXISTS", KEYS[2], "vt") == 0 then return {"queueNotFound", 2} end
local picked = {}
for i = 2, #ARGV, 2 do
  picked[#picked + 1] = ARGV[i] ~= "" and {ARGV[i], ARGV[i + 1]} or false
end
return put(KEYS[1], KEYS[2], picked, ARGV[1])
