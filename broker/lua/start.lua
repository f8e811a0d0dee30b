-- start: a worker marks the jobs it read as running, unless they already ended; a job
-- whose deadline passed (on the Redis clock, so skew between hosts does not matter) is
-- ended here as expired: outcome written, reply sent, entry acked and removed.
-- It also ends their hold (see hold.lua): from here on they count as started.
-- All jobs of one call share a stream and a reply stream.
-- KEYS[1] priority stream   KEYS[2] reply stream   KEYS[3] held jobs (zset)
-- then per job i (1..n): KEYS[3+i] job hash
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] job ttl ms (only if the record had vanished)
-- ARGV[4] result ttl ms   ARGV[5] reply ttl ms   ARGV[6] reply stream max length
-- then per job i: ARGV[3i+4] entry id   ARGV[3i+5] job id   ARGV[3i+6] deadline ms ('0': none)
-- Returns one verdict per job: 'run' | 'skip' (already ended) | 'expired'
-- Runs over maxmemory (admitted work must finish): its first write, XACK of id 0-0, is not
-- deny-oom (Redis 6.2 decides there), and on Redis 7 its shebang says allow-oom.
for _, i in ipairs({3, 4, 5, 6}) do ms(i) end
redis.call('XACK', KEYS[1], ARGV[1], '0-0')
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local now_s = tostring(now)  -- (converted once, not once a job)
local reply = KEYS[2]
local out = {}
for i = 1, #KEYS - 3 do
  local job_key = KEYS[3 + i]
  local entry, id, deadline = ARGV[3 * i + 4], ARGV[3 * i + 5], tonumber(ARGV[3 * i + 6])
  local state = redis.call('HGET', job_key, 'state')
  if state == 'succeeded' or state == 'failed' or state == 'cancelled' or state == 'expired' then
    redis.call('XACK', KEYS[1], ARGV[1], entry)
    redis.call('XDEL', KEYS[1], entry)
    out[i] = 'skip'
  elseif deadline > 0 and now > deadline then
    local outcome = cjson.encode({v = 1, id = id, state = 'expired', finished_ms = now,
      error = {code = 'deadline_exceeded', message = 'deadline passed before the job started'}})
    redis.call('HSET', job_key, 'state', 'expired', 'outcome', outcome, 'finished', now)
    redis.call('PEXPIRE', job_key, ARGV[4])
    redis.call('XADD', reply, 'MAXLEN', '~', ARGV[6], '*', 'id', id, 'o', outcome)
    redis.call('PEXPIRE', reply, ARGV[5])
    redis.call('XACK', KEYS[1], ARGV[1], entry)
    redis.call('XDEL', KEYS[1], entry)
    out[i] = 'expired'
  else
    redis.call('HSET', job_key, 'state', 'running', 'worker', ARGV[2], 'started', now_s)
    if not state then
      redis.call('PEXPIRE', job_key, ARGV[3])
    end
    out[i] = 'run'
  end
end
local ids = {}
for i = 1, #KEYS - 3 do ids[#ids + 1] = ARGV[3 * i + 5] end
for i = 1, #ids, 1000 do  -- their holds end, in one command per thousand
  redis.call('ZREM', KEYS[3], unpack(ids, i, math.min(i + 999, #ids)))
end
return out
