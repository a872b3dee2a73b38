-- The queue index {ns}:QUEUES: listed here everywhere, changed here on a cluster (where it
-- lives in a slot of its own, so the scripts of a queue cannot touch it).
-- KEYS[1] {ns}:QUEUES (set)   ARGV[1] "list", "check", "add" or "remove"   ARGV[2] qname
-- Returns {"ok"} ({"ok", name...} for "list"), or {"indexConflict", key, type} (nothing
-- written).
local conflict = index_conflict(KEYS[1])
if conflict then return conflict end
if ARGV[1] == "list" then
  local names = redis.call("SMEMBERS", KEYS[1])
  table.insert(names, 1, "ok")
  return names
end
if ARGV[1] == "add" then redis.call("SADD", KEYS[1], ARGV[2]) end
if ARGV[1] == "remove" then redis.call("SREM", KEYS[1], ARGV[2]) end
return {"ok"}
