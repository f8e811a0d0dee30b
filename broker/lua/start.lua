-- start: a worker claims a job it read for running, unless it already ended or expired.
-- KEYS[1] job hash   KEYS[2] priority stream the entry sits on
-- ARGV[1] group   ARGV[2] entry id   ARGV[3] consumer   ARGV[4] deadline ms ('0': none)
-- ARGV[5] job ttl ms (applied only if the job record had vanished)
-- Returns 'run' | 'skip' (job already ended: entry acked and removed) | 'expired'
-- Deadlines are checked against the Redis clock, so skew between hosts does not matter.
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'succeeded' or state == 'failed' or state == 'cancelled' or state == 'expired' then
  redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[2], ARGV[2])
  return 'skip'
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local deadline = tonumber(ARGV[4])
if deadline > 0 and now > deadline then
  return 'expired'
end
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[3], 'started', now)
if not state then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return 'run'
