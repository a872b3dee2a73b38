-- The queue index on a cluster, where {ns}:QUEUES lives in a slot of its own.
-- KEYS[1] {ns}:QUEUES (set)   ARGV[1] "add" or "remove"   ARGV[2] qname
if ARGV[1] == "add" then return redis.call("SADD", KEYS[1], ARGV[2]) end
return redis.call("SREM", KEYS[1], ARGV[2])
