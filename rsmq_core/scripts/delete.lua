-- Delete messages, as RSMQ's deleteMessage does, any number in one call, optionally fenced.
-- KEYS[1] {ns}:{qname} (zset)   KEYS[2] {ns}:{qname}:Q (hash)
-- ARGV    pairs: message id, receive count it must still have ("" for any)
-- A fence keeps a worker whose visibility timeout ran out from deleting a message that
-- another worker has received since (its receive count went up).
-- Returns {"ok", 1 or 0 per id} (1: it was in the queue and had fields) or {"queueNotFound"}.
if redis.call("HEXISTS", KEYS[2], "vt") == 0 then return {"queueNotFound"} end
local fields = {}
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  fields[#fields + 1], fields[#fields + 2], fields[#fields + 3] = id, id .. ":rc", id .. ":fr"
end
if #fields == 0 then return {"ok"} end
local values = redis.call("HMGET", KEYS[2], unpack(fields))
local out, members, seen = {"ok"}, {}, {}
for i = 1, #ARGV, 2 do
  local id, fence, j = ARGV[i], ARGV[i + 1], (i + 1) / 2
  local body, rc, fr = values[3 * j - 2], values[3 * j - 1], values[3 * j]
  local deleted = 0
  if not seen[id] and (fence == "" or rc == fence) and redis.call("ZSCORE", KEYS[1], id) then
    seen[id] = true
    members[#members + 1] = id  -- removed even without fields, as RSMQ's ZREM would
    if body or rc or fr then deleted = 1 end
  end
  out[#out + 1] = deleted
end
if #members > 0 then
  redis.call("ZREM", KEYS[1], unpack(members))
  local drop = {}
  for _, id in ipairs(members) do
    drop[#drop + 1], drop[#drop + 2], drop[#drop + 3] = id, id .. ":rc", id .. ":fr"
  end
  redis.call("HDEL", KEYS[2], unpack(drop))
end
return out
