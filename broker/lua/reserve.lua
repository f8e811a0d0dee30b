-- reserve: hold an idempotency key for a job about to be admitted on another pool (its
-- route's overflow), whose partition is on another hash slot: the key stays on the
-- route's primary partition, so every pool a job may go to finds it there. The value is
-- '?' .. job id .. '|' .. ms when reserved, until settle.lua fills it with the job id (once
-- admitted) or drops it (not admitted).
-- KEYS[1] idempotency key
-- ARGV[1] job id   ARGV[2] idempotency ttl ms
-- Returns {'held'} (reserved for this job) | {'duplicate', job id} | {'reserved', job id, ms since reserved}
--   (the last: another submission holds it)
local ttl = ms(2)
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local existing = redis.call('GET', KEYS[1])
if not existing then
  redis.call('SET', KEYS[1], '?' .. ARGV[1] .. '|' .. now, 'PX', ttl)
  return {'held'}
end
local rid, at = string.match(existing, '^%?([^|]*)|(%d+)$')
if rid then return {'reserved', rid, now - tonumber(at)} end
return {'duplicate', existing}
