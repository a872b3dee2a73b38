-- Delete messages, as RSMQ's deleteMessage does, any number in one call, optionally fenced.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)
-- ARGV[1] message ids, joined (each is 32 characters)
-- ARGV[2] per id, the receive count it must still have ("" for any, "0" for never received),
-- joined with ","
-- (Two arguments rather than two per id: redis-py's asyncio client packs each argument in
-- Python, which costs more than the whole script for a large batch.)
-- A fence keeps a worker whose visibility timeout ran out from deleting a message that
-- another worker has received since (its receive count went up).
-- Returns {"ok", 1 or 0 per id} (1: it was in the queue) or {"queueNotFound"}.
if redis.call("HEXISTS", KEYS[2], "vt") == 0 then return {"queueNotFound"} end
local ids, fences = {}, {}
for i = 1, #ARGV[1] / 32 do ids[i] = string.sub(ARGV[1], 32 * i - 31, 32 * i) end
for fence in string.gmatch(ARGV[2] .. ",", "([^,]*),") do fences[#fences + 1] = fence end
if #ids == 0 then return {"ok"} end
local fields = {}
for i, id in ipairs(ids) do
  fields[3 * i - 2], fields[3 * i - 1], fields[3 * i] = id, id .. ":rc", id .. ":fr"
end
local values = redis.call("HMGET", KEYS[2], unpack(fields))
local out, members, positions, seen = {"ok"}, {}, {}, {}
for i, id in ipairs(ids) do
  local fence = fences[i] or ""
  local body, rc = values[3 * i - 2], values[3 * i - 1]
  local deleted = 0
  if not seen[id] and (fence == "" or (rc or "0") == fence) then
    seen[id] = true
    -- Every send writes the body and the ZSET member in one step and every delete removes
    -- both, so the body says whether the message is there: no call per id (each costs more
    -- than the rest of the work for it).
    members[#members + 1] = id
    positions[#positions + 1] = i
    if body then deleted = 1 end
  end
  out[#out + 1] = deleted
end
if #members > 0 then
  redis.call("ZREM", KEYS[1], unpack(members))
  local drop = {}
  for _, i in ipairs(positions) do
    drop[#drop + 1], drop[#drop + 2], drop[#drop + 3] = fields[3 * i - 2], fields[3 * i - 1],
      fields[3 * i]
  end
  redis.call("HDEL", KEYS[2], unpack(drop))
end
return out
