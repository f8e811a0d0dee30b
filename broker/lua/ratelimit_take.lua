-- ratelimit_take: may a bridge call this provider now? Two token buckets shared by every
-- bridge: requests (ARGV[1] per minute) and tokens (ARGV[2] per minute; 0: no limit),
-- each holding at most ARGV[4] seconds' worth; and a pause set from the provider's own
-- rate-limit headers (see ratelimit_observe).
-- KEYS[1] the provider's rate-limit hash
-- ARGV[1] requests per minute (0: none)   ARGV[2] tokens per minute (0: none)
-- ARGV[3] tokens this call may use   ARGV[4] burst seconds
-- Returns 0 when the call may go now (and takes from the buckets), else ms to wait.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local rpm, tpm, need, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
redis.call('PEXPIRE', KEYS[1], 600000)  -- first write, not deny-oom: runs over maxmemory
local b = redis.call('HMGET', KEYS[1], 'req', 'tok', 'at', 'pause_until')
local at = tonumber(b[3]) or now
local pause = tonumber(b[4]) or 0
if now < pause then
  return pause - now
end
local elapsed = math.max(0, now - at)
local req_cap, tok_cap = math.max(1, rpm * burst / 60), math.max(need, tpm * burst / 60)
local req = math.min(req_cap, (tonumber(b[1]) or req_cap) + elapsed * rpm / 60000)
local tok = math.min(tok_cap, (tonumber(b[2]) or tok_cap) + elapsed * tpm / 60000)
local wait = 0
if rpm > 0 and req < 1 then
  wait = math.ceil((1 - req) * 60000 / rpm)
end
if tpm > 0 and tok < need then
  wait = math.max(wait, math.ceil((need - tok) * 60000 / tpm))
end
if wait == 0 then
  if rpm > 0 then req = req - 1 end
  if tpm > 0 then tok = tok - need end
end
redis.call('HSET', KEYS[1], 'req', tostring(req), 'tok', tostring(tok), 'at', now)
redis.call('PEXPIRE', KEYS[1], 600000)
return wait
