-- complete: write a job's outcome if it has none yet (first result wins), append it to
-- the caller's reply stream, XACK and XDEL the entry, and count it towards the drain rate.
-- With a dead-letter reason, the raw entry is also copied to the dead-letter stream.
-- KEYS[1] priority stream   KEYS[2] job hash   KEYS[3] reply stream
-- KEYS[4] drain hash        KEYS[5] dead-letter stream
-- ARGV[1] group   ARGV[2] entry id   ARGV[3] job id   ARGV[4] final state
-- ARGV[5] outcome JSON ('': no job to finish)   ARGV[6] result ttl ms   ARGV[7] reply ttl ms
-- ARGV[8] reply stream max length   ARGV[9] dead-letter reason ('': none)
-- ARGV[10] raw payload (dead letters only)   ARGV[11] dead-letter stream max length
-- Returns 1 when this call wrote the outcome, 0 when one existed already.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if ARGV[9] ~= '' then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[11], '*', 'source', KEYS[1], 'entry', ARGV[2],
    'job', ARGV[3], 'reason', ARGV[9], 'd', ARGV[10])
end
local written = 0
if ARGV[5] ~= '' then
  local state = redis.call('HGET', KEYS[2], 'state')
  if state ~= 'succeeded' and state ~= 'failed' and state ~= 'cancelled' and state ~= 'expired' then
    redis.call('HSET', KEYS[2], 'state', ARGV[4], 'outcome', ARGV[5], 'finished', now)
    redis.call('PEXPIRE', KEYS[2], ARGV[6])
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', 'id', ARGV[3], 'o', ARGV[5])
    redis.call('PEXPIRE', KEYS[3], ARGV[7])
    written = 1
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
local d = redis.call('HMGET', KEYS[4], 'ws', 'n')
local ws = tonumber(d[1])
local n = tonumber(d[2]) or 0
if not ws then
  redis.call('HSET', KEYS[4], 'ws', now, 'n', 1)
elseif now - ws >= 1000 then
  redis.call('HSET', KEYS[4], 'rate', string.format('%.3f', (n + 1) * 1000 / (now - ws)), 'ws', now, 'n', 0)
else
  redis.call('HSET', KEYS[4], 'n', n + 1)
end
return written
