-- ratelimit_observe: what a provider's rate-limit headers said after a call. When it
-- reports no requests (or tokens) left, every bridge pauses calls to it until the reset
-- it announced, before any 429.
-- KEYS[1] the provider's rate-limit hash
-- ARGV[1] pause ms from now (0: none)
-- Returns the pause's end (ms since the epoch, Redis clock), or 0.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local pause = tonumber(ARGV[1])
if pause <= 0 then
  return 0
end
redis.call('PEXPIRE', KEYS[1], math.max(600000, pause + 60000))  -- first write, not deny-oom
local until_ms = math.max(tonumber(redis.call('HGET', KEYS[1], 'pause_until')) or 0, now + pause)
redis.call('HSET', KEYS[1], 'pause_until', until_ms)
redis.call('PEXPIRE', KEYS[1], math.max(600000, pause + 60000))
return until_ms
