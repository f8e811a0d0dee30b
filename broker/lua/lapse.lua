-- lapse: a start deadline kept by its caller: at the deadline, expire the job if no worker
-- has started it, so the caller is answered even with no watchdog running. A job that
-- started runs to its end. Its entry is acked (a worker may hold it, read but not started:
-- its start then finds the job ended and skips it) and removed; the outcome goes to the
-- job record and its reply stream, as the watchdog's would.
-- Runs over maxmemory (it ends admitted work): its first write, XACK of id 0-0, is not
-- deny-oom, and on Redis 7 its shebang says allow-oom.
-- KEYS[1] job hash   KEYS[2] its stream (the record's)   KEYS[3] its reply stream
-- KEYS[4] its tenant's jobs in flight (zset)
-- ARGV[1] group   ARGV[2] job id   ARGV[3] result ttl ms   ARGV[4] reply ttl ms
-- ARGV[5] reply stream max length
-- Returns {'lapsed', outcome JSON} (this call expired it) | {'early', ms until the deadline} | {state}: 'running',
-- 'forwarded', an ended state, 'nodeadline' or 'missing'.
for _, i in ipairs({3, 4, 5}) do ms(i) end
redis.call('XACK', KEYS[2], ARGV[1], '0-0')
local rec = redis.call('HMGET', KEYS[1], 'state', 'entry', 'deadline')
local state, entry, deadline = rec[1], rec[2], tonumber(rec[3])
if not state then return {'missing'} end
if state ~= 'queued' then return {state} end
if not deadline then return {'nodeadline'} end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if now <= deadline then return {'early', deadline - now + 1} end
local outcome = cjson.encode({v = 1, id = ARGV[2], state = 'expired', finished_ms = now,
  error = {code = 'deadline_exceeded', message = 'deadline passed before the job started'}})
if entry then
  redis.call('XACK', KEYS[2], ARGV[1], entry)
  redis.call('XDEL', KEYS[2], entry)
end
redis.call('HSET', KEYS[1], 'state', 'expired', 'outcome', outcome, 'finished', now)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'id', ARGV[2], 'o', outcome)
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return {'lapsed', outcome}
