-- cancel: end a job that has not ended yet. A queued entry is removed from its stream;
-- a running one finishes on its worker, whose result is then discarded (first result wins).
-- The job leaves its tenant's jobs in flight.
-- KEYS[1] job hash   KEYS[2] priority stream   KEYS[3] reply stream
-- KEYS[4] the tenant's jobs in flight (zset)
-- ARGV[1] group   ARGV[2] outcome JSON   ARGV[3] result ttl ms   ARGV[4] reply ttl ms
-- ARGV[5] reply stream max length   ARGV[6] job id
-- Returns 'cancelled', 'missing', or the state the job had already ended in.
-- Runs over maxmemory (admitted work must finish): its first write, XACK of id 0-0 on the stream, is not
-- deny-oom (Redis 6.2 decides there), and on Redis 7 its shebang says allow-oom.
for _, i in ipairs({3, 4, 5}) do ms(i) end
redis.call('XACK', KEYS[2], ARGV[1], '0-0')
local rec = redis.call('HMGET', KEYS[1], 'state', 'entry')
local state = rec[1]
if not state then
  return 'missing'
end
if state == 'succeeded' or state == 'failed' or state == 'cancelled' or state == 'expired' then
  return state
end
if state == 'queued' and rec[2] then
  redis.call('XACK', KEYS[2], ARGV[1], rec[2])
  redis.call('XDEL', KEYS[2], rec[2])
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'outcome', ARGV[2], 'finished', now)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[6])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'id', ARGV[6], 'o', ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 'cancelled'
