-- The first half of a move on a cluster: read the messages to move, leaving them in place
-- (the client deletes them, fenced, once the target has them).
-- KEYS[1] source zset   KEYS[2] source hash
-- ARGV[1] how many, oldest first, when no ids follow; then pairs as in move.lua
-- Returns {"ok", then id, body, receive count per message ("", "", "" for one not there)}
-- or {"queueNotFound", 1}.
if redis.call("HEXISTS", KEYS[2], "vt") == 0 then return {"queueNotFound", 1} end
local out = {"ok"}
for _, m in ipairs(pick(KEYS[1], KEYS[2], 2, tonumber(ARGV[1]))) do
  local row = m or {"", "", ""}
  out[#out + 1], out[#out + 2], out[#out + 3] = row[1], row[2], row[3]
end
return out
