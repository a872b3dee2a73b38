-- Announce a queue's size on its realtime channel, as a realtime send does, for a sender that
-- has something to do between storing messages and waking the workers.
-- KEYS[1] {ns}:{qname} (zset)
-- ARGV[1] the realtime channel {ns}:rt:{qname} (marked: see notify in _lib.lua)
-- Returns how many heard it (on a cluster: on the queue's master).
return notify(ARGV[1], redis.call("ZCARD", KEYS[1]))
