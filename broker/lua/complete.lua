-- complete: for each entry, write its job's outcome if it has none yet (first result
-- wins), append it to the caller's reply stream, XACK and XDEL the entry; count them all
-- towards the stream's drain rate. In dead-letter mode each entry is also copied, raw, to
-- the dead-letter stream. All entries of one call share a stream and a reply stream.
-- KEYS[1] priority stream   KEYS[2] drain hash   KEYS[3] dead-letter stream
-- KEYS[4] reply stream   then per entry i (1..n): KEYS[4+i] job hash
-- ARGV[1] group   ARGV[2] result ttl ms   ARGV[3] reply ttl ms   ARGV[4] reply stream max
-- length   ARGV[5] dead-letter stream max length   ARGV[6] mode: 'ok' | 'dead'
-- then per entry, F = 4 ('ok') or 6 ('dead') fields from ARGV[7+F(i-1)]: entry id, job id,
--   final state, outcome JSON ('': no job to finish) [, dead-letter reason, raw payload]
-- Returns one number per entry: 1 when this call wrote the outcome, 0 when one existed.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local reply = KEYS[4]
local dead = ARGV[6] == 'dead'
local f = dead and 6 or 4
local n = #KEYS - 4
local out, entries = {}, {}
for i = 1, n do
  local job_key, a = KEYS[4 + i], 7 + f * (i - 1)
  local entry, id, final, outcome = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  if dead then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'source', KEYS[1], 'entry', entry,
      'job', id, 'reason', ARGV[a + 4], 'd', ARGV[a + 5])
  end
  out[i] = 0
  if outcome ~= '' then
    local state = redis.call('HGET', job_key, 'state')
    if state ~= 'succeeded' and state ~= 'failed' and state ~= 'cancelled' and state ~= 'expired' then
      redis.call('HSET', job_key, 'state', final, 'outcome', outcome, 'finished', now)
      redis.call('PEXPIRE', job_key, ARGV[2])
      redis.call('XADD', reply, 'MAXLEN', '~', ARGV[4], '*', 'id', id, 'o', outcome)
      out[i] = 1
    end
  end
  entries[i] = entry
end
-- One XACK and one XDEL for the whole call (callers send at most 500 entries per call,
-- well inside unpack's limit).
if n > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(entries))
  redis.call('XDEL', KEYS[1], unpack(entries))
end
redis.call('PEXPIRE', reply, ARGV[3])
local d = redis.call('HMGET', KEYS[2], 'ws', 'n')
local ws = tonumber(d[1])
local count = (tonumber(d[2]) or 0) + n
if not ws then
  redis.call('HSET', KEYS[2], 'ws', now, 'n', count)
elseif now - ws >= 1000 then
  redis.call('HSET', KEYS[2], 'rate', string.format('%.3f', count * 1000 / (now - ws)), 'ws', now, 'n', 0)
else
  redis.call('HSET', KEYS[2], 'n', count)
end
return out
