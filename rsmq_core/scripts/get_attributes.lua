-- A queue's attributes, as RSMQ's getQueueAttributes reports them.
-- KEYS[1] {ns}:{qname}:Q (hash)   KEYS[2] {ns}:{qname} (zset)
-- Returns {"ok", vt, delay, maxsize, totalrecv, totalsent, created, modified, msgs, hiddenmsgs,
-- dedup_window, retention, totalexpired} or {"queueNotFound"}.
local s = now()
return attributes(KEYS[1], KEYS[2], s) or {"queueNotFound"}
