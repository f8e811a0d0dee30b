-- complete: for each entry, write its job's outcome if it has none yet (first result
-- wins), append it to the caller's reply stream, XACK and XDEL the entry; count them all
-- towards the stream's drain rate. An entry with a dead-letter reason is also copied, raw,
-- to the dead-letter stream.
-- KEYS[1] priority stream   KEYS[2] drain hash   KEYS[3] dead-letter stream
-- then per entry i (1..n): KEYS[2+2i] job hash   KEYS[3+2i] reply stream
-- ARGV[1] group   ARGV[2] result ttl ms   ARGV[3] reply ttl ms   ARGV[4] reply stream max
-- length   ARGV[5] dead-letter stream max length
-- then per entry i: ARGV[6i] entry id   ARGV[6i+1] job id   ARGV[6i+2] final state
--   ARGV[6i+3] outcome JSON ('': no job to finish)   ARGV[6i+4] dead-letter reason ('': none)
--   ARGV[6i+5] raw payload (dead letters only)
-- Returns one number per entry: 1 when this call wrote the outcome, 0 when one existed.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local n = (#KEYS - 3) / 2
local out = {}
for i = 1, n do
  local job_key, reply = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local entry, id, final, outcome = ARGV[6 * i], ARGV[6 * i + 1], ARGV[6 * i + 2], ARGV[6 * i + 3]
  if ARGV[6 * i + 4] ~= '' then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'source', KEYS[1], 'entry', entry,
      'job', id, 'reason', ARGV[6 * i + 4], 'd', ARGV[6 * i + 5])
  end
  out[i] = 0
  if outcome ~= '' then
    local state = redis.call('HGET', job_key, 'state')
    if state ~= 'succeeded' and state ~= 'failed' and state ~= 'cancelled' and state ~= 'expired' then
      redis.call('HSET', job_key, 'state', final, 'outcome', outcome, 'finished', now)
      redis.call('PEXPIRE', job_key, ARGV[2])
      redis.call('XADD', reply, 'MAXLEN', '~', ARGV[4], '*', 'id', id, 'o', outcome)
      redis.call('PEXPIRE', reply, ARGV[3])
      out[i] = 1
    end
  end
  redis.call('XACK', KEYS[1], ARGV[1], entry)
  redis.call('XDEL', KEYS[1], entry)
end
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
