-- breaker_allow: may a bridge call this provider target now? Closed: yes. Open: no,
-- until its open time has passed; then half-open: one probe at a time is let through
-- (a probe holds the slot for ARGV[1] ms, or until its outcome is recorded).
-- KEYS[1] the target's breaker hash
-- ARGV[1] probe slot ms
-- Returns {verdict, ms}: {'allow', 0} | {'probe', 0} | {'deny', ms until it may ask again}
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local b = redis.call('HMGET', KEYS[1], 'state', 'until', 'probe_until')
local state, untl, probe = b[1] or 'closed', tonumber(b[2]) or 0, tonumber(b[3]) or 0
if state == 'closed' then
  return {'allow', 0}
end
if state == 'open' and now < untl then
  return {'deny', untl - now}
end
if state == 'half' and now < probe then
  return {'deny', probe - now}
end
redis.call('HSET', KEYS[1], 'state', 'half', 'probe_until', now + tonumber(ARGV[1]))
return {'probe', 0}
