-- complete: for each entry, write its job's outcome if it has none yet (first result
-- wins), append it to the caller's reply stream, XACK and XDEL the entry, and drop its
-- job from its tenant's jobs in flight; count ARGV[7] of them towards the stream's drain
-- rate (jobs failed for want of a provider did not drain it). In dead-letter mode each
-- entry is also copied, raw, to the dead-letter stream. A result for a job that already
-- has one (it was re-queued while this worker still ran it) is a duplicate execution:
-- not delivered, counted in the drain hash's 'dup' field; the drained ones in its 'done'. All entries of one call share
-- a stream, a reply stream and a tenant.
-- KEYS[1] priority stream   KEYS[2] drain hash   KEYS[3] dead-letter stream
-- KEYS[4] reply stream   KEYS[5] the tenant's jobs in flight (zset)
-- then per entry i (1..n): KEYS[5+i] job hash
-- ARGV[1] group   ARGV[2] result ttl ms   ARGV[3] reply ttl ms   ARGV[4] reply stream max
-- length   ARGV[5] dead-letter stream max length   ARGV[6] mode: 'ok' | 'dead'
-- ARGV[7] how many entries count as drained   ARGV[8] the finishing consumer
-- then per entry, F = 4 ('ok') or 6 ('dead') fields from ARGV[9+F(i-1)]: entry id, job id,
--   final state, outcome JSON ('': no job to finish) [, dead-letter reason, raw payload]
-- Returns one number per entry: 1 when this call wrote the outcome; 2 when another
-- consumer's result was there already (a duplicate execution); 0 otherwise (nothing to
-- write, this consumer's own result is there, or the job was cancelled or expired).
-- Runs over maxmemory (admitted work must finish): its first write, XACK of id 0-0, is not
-- deny-oom (Redis 6.2 decides there), and on Redis 7 its shebang says allow-oom.
for _, i in ipairs({2, 3, 4, 5}) do ms(i) end
redis.call('XACK', KEYS[1], ARGV[1], '0-0')
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local now_s = tostring(now)  -- (converted once, not once a job)
local reply = KEYS[4]
local dead = ARGV[6] == 'dead'
local f = dead and 6 or 4
local n = #KEYS - 5
local out, entries, ids, dups = {}, {}, {}, 0
for i = 1, n do
  local job_key, a = KEYS[5 + i], 9 + f * (i - 1)
  local entry, id, final, outcome = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  if dead then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'source', KEYS[1], 'entry', entry,
      'job', id, 'r', reply, 'reason', ARGV[a + 4], 'd', ARGV[a + 5])
  end
  out[i] = 0
  if outcome ~= '' then
    local had = redis.call('HMGET', job_key, 'state', 'by')
    local state = had[1]
    if state ~= 'succeeded' and state ~= 'failed' and state ~= 'cancelled' and state ~= 'expired' then
      redis.call('HSET', job_key, 'state', final, 'outcome', outcome, 'finished', now_s,
        'by', ARGV[8])
      redis.call('PEXPIRE', job_key, ARGV[2])
      redis.call('XADD', reply, 'MAXLEN', '~', ARGV[4], '*', 'id', id, 'o', outcome)
      out[i] = 1
    elseif (state == 'succeeded' or state == 'failed') and had[2] ~= ARGV[8] then
      out[i] = 2  -- (the same consumer again: a retried call whose reply was lost)
      dups = dups + 1
    end
  end
  entries[i] = entry
  if id ~= '' then ids[#ids + 1] = id end
end
-- One XACK and one XDEL for the whole call (callers send at most 500 entries per call,
-- well inside unpack's limit).
if n > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(entries))
  redis.call('XDEL', KEYS[1], unpack(entries))
end
if #ids > 0 then
  redis.call('ZREM', KEYS[5], unpack(ids))
end
redis.call('PEXPIRE', reply, ARGV[3])
if dups > 0 then redis.call('HINCRBY', KEYS[2], 'dup', dups) end
if tonumber(ARGV[7]) > 0 then redis.call('HINCRBY', KEYS[2], 'done', ARGV[7]) end
local d = redis.call('HMGET', KEYS[2], 'ws', 'n')
local ws = tonumber(d[1])
local count = (tonumber(d[2]) or 0) + tonumber(ARGV[7])
if not ws or now - ws > 5000 then  -- the first window, or the first after an idle spell
  redis.call('HSET', KEYS[2], 'ws', now, 'n', tonumber(ARGV[7]))
  redis.call('HDEL', KEYS[2], 'rate')
elseif now - ws >= 1000 then
  redis.call('HSET', KEYS[2], 'rate', string.format('%.3f', count * 1000 / (now - ws)), 'ws', now, 'n', 0)
else
  redis.call('HSET', KEYS[2], 'n', count)
end
return out
