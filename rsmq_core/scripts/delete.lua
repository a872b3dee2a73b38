-- Delete messages, as RSMQ's deleteMessage does, any number in one call, optionally fenced.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)
-- ARGV[1] message ids, joined (each is 32 characters)
-- ARGV[2] per id, the receive count it must still have ("" for any, "0" for never received),
-- joined with ","
-- ARGV[3] "count" to answer only how many were deleted (no id may then be fenced), else ""
-- (Two arguments rather than two per id: redis-py's asyncio client packs each argument in
-- Python, which costs more than the whole script for a large batch.)
-- A fence keeps a worker whose visibility timeout ran out from deleting a message that
-- another worker has received since (its receive count went up).
-- Returns {"ok", 1 or 0 per id} (1: it was in the queue), {"ok", how many} with "count",
-- or {"queueNotFound"}.
if redis.call("HEXISTS", KEYS[2], "vt") == 0 then return {"queueNotFound"} end
local ids, drop = {}, {}
for i = 1, #ARGV[1] / 32 do
  local id = string.sub(ARGV[1], 32 * i - 31, 32 * i)
  ids[i] = id
  drop[3 * i - 2], drop[3 * i - 1], drop[3 * i] = id, id .. ":rc", id .. ":fr"
end
if ARGV[3] == "count" then
  -- Nothing to check per id: ZREM's count is the answer (it counts a repeated id once).
  if #ids == 0 then return {"ok", 0} end
  local deleted = redis.call("ZREM", KEYS[1], unpack(ids))
  redis.call("HDEL", KEYS[2], unpack(drop))
  return {"ok", deleted}
end
if #ids == 0 then return {"ok"} end
local fences, fenced = {}, false
for fence in string.gmatch(ARGV[2] .. ",", "([^,]*),") do
  fences[#fences + 1] = fence
  if fence ~= "" then fenced = true end
end
-- Every send writes the body and the ZSET member in one step and every delete removes both,
-- so the body says whether the message is there: no call per id (each costs more than the
-- rest of the work for it). The receive count is read only when a fence needs it.
local fields = {}
for i, id in ipairs(ids) do
  if fenced then fields[2 * i - 1], fields[2 * i] = id, drop[3 * i - 1] else fields[i] = id end
end
local values = redis.call("HMGET", KEYS[2], unpack(fields))
local step = fenced and 2 or 1
local out, members, gone, seen = {"ok"}, {}, {}, {}
for i, id in ipairs(ids) do
  local fence = fences[i] or ""
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
  redis.call("ZREM", KEYS[1], unpack(members))
  redis.call("HDEL", KEYS[2], unpack(gone))
end
return out
