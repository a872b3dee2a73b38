-- Periodic schedules (see rsmq_core/schedules.py). Keys RSMQ never reads:
-- KEYS[1] {ns}:@schedules (hash: name -> the definition, JSON)
-- KEYS[2] {ns}:@schedules:next (zset: name -> its next fire time, epoch ms, UTC)
-- ARGV[1] the operation, then its arguments ("channel": where "add" and "remove" say "1" so
-- that waiting workers look again, marked as notify in _lib.lua takes it):
--   "add" name definition next-ms message-bytes channel; KEYS[3] the queue's hash. Replaces a
--     definition of that name; keeps its next fire time when its timing (cron or every) is
--     the same, so workers that all declare it at start change nothing. {"ok", next-ms},
--     {"queueNotFound"} or {"messageTooLong"} (nothing written).
--   "remove" name channel: {"ok", 1 or 0}.
--   "list": {"ok", name, definition, next-ms, ...}.
--   "due" limit: the server's time and the earliest fire time after it ("" for none), then
--     up to `limit` schedules due now: {"ok", now-ms, earliest, name, definition, due-ms, ...}.
--   "fire" name definition due-ms next-ms send channel suffix body; KEYS[3] the queue's zset,
--     KEYS[4] its hash. Claims the tick `due-ms` of schedule `name` (only while that is still
--     its next fire time and `definition` still its definition: another worker that claimed it
--     first moved it on), moves it on to `next-ms` and, with `send` "1", sends `body` as
--     send.lua would, all in this one call: no two workers send one tick, and a worker that
--     dies between calls loses none. {"ok", id ("" when skipped)}, {"taken"},
--     {"queueNotFound"} or {"messageTooLong"} (the tick is moved on all the same: a schedule
--     whose queue was deleted must not be tried again at once, forever).
local op = ARGV[1]
if op == "add" then
  local maxsize = redis.call("HGET", KEYS[3], "maxsize")
  if not maxsize then return {"queueNotFound"} end
  if tonumber(maxsize) ~= -1 and tonumber(ARGV[5]) > tonumber(maxsize) then
    return {"messageTooLong"}
  end
  local name, def, next_ms = ARGV[2], ARGV[3], ARGV[4]
  local old = redis.call("HGET", KEYS[1], name)
  local at = redis.call("ZSCORE", KEYS[2], name)
  redis.call("HSET", KEYS[1], name, def)
  notify(ARGV[6], "1")
  if at and old then
    local was, now_is = cjson.decode(old), cjson.decode(def)
    if was.cron == now_is.cron and was.every == now_is.every then return {"ok", at} end
  end
  redis.call("ZADD", KEYS[2], next_ms, name)
  return {"ok", next_ms}
end
if op == "remove" then
  redis.call("ZREM", KEYS[2], ARGV[2])
  local removed = redis.call("HDEL", KEYS[1], ARGV[2])
  if removed == 1 then notify(ARGV[3], "1") end
  return {"ok", removed}
end
if op == "list" then
  local out = {"ok"}
  local all = redis.call("HGETALL", KEYS[1])
  for i = 1, #all, 2 do
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
    out[#out + 1] = redis.call("ZSCORE", KEYS[2], all[i]) or ""
  end
  return out
end
if op == "due" then
  local _, _, ms = now()
  local first = redis.call("ZRANGEBYSCORE", KEYS[2], "(" .. ms, "+inf", "WITHSCORES", "LIMIT", 0, 1)
  local out = {"ok", ms, first[2] or ""}
  local due = redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", ms, "WITHSCORES", "LIMIT", 0, ARGV[2])
  for i = 1, #due, 2 do
    local def = redis.call("HGET", KEYS[1], due[i])
    if def then
      out[#out + 1], out[#out + 2], out[#out + 3] = due[i], def, due[i + 1]
    else
      redis.call("ZREM", KEYS[2], due[i])  -- its definition is gone: nothing to fire
    end
  end
  return out
end
if op == "fire" then
  local name, due = ARGV[2], tonumber(ARGV[4])
  local at = redis.call("ZSCORE", KEYS[2], name)
  if redis.call("HGET", KEYS[1], name) ~= ARGV[3] or not at or tonumber(at) ~= due then
    return {"taken"}
  end
  redis.call("ZADD", KEYS[2], ARGV[5], name)
  if ARGV[6] ~= "1" then return {"ok", ""} end
  local cfg = redis.call("HMGET", KEYS[4], "delay", "maxsize")
  if not cfg[1] then return {"queueNotFound"} end
  local maxsize = tonumber(cfg[2])
  if maxsize ~= -1 and #ARGV[9] > maxsize then return {"messageTooLong"} end
  local out = store(KEYS[3], KEYS[4], {{ARGV[8], ARGV[9]}}, tonumber(cfg[1]) * 1000, ARGV[7])
  return {"ok", out[2]}
end
return redis.error_reply("schedule.lua: unknown operation " .. tostring(op))
