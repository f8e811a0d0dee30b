-- expire: end jobs whose deadline passed while their entries waited, undelivered, for a
-- worker (say the pool has none). An entry delivered since it was read is left to its
-- worker, whose start script ends it; an entry whose job ended already is just removed.
-- KEYS[1] priority stream   then per entry i (1..n): KEYS[2i] job hash   KEYS[2i+1] reply stream
-- ARGV[1] group   ARGV[2] result ttl ms   ARGV[3] reply ttl ms   ARGV[4] reply stream max length
-- then per entry i: ARGV[4+2i-1] entry id   ARGV[4+2i] job id
-- Returns one verdict per entry: 'expired' | 'ended' | 'kept' (not expired, delivered or gone)
-- Runs over maxmemory (admitted work must finish): its first write, XACK of id 0-0, is not
-- deny-oom (Redis 6.2 decides there), and on Redis 7 its shebang says allow-oom.
for _, i in ipairs({2, 3, 4}) do ms(i) end
redis.call('XACK', KEYS[1], ARGV[1], '0-0')
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local out = {}
for i = 1, (#KEYS - 1) / 2 do
  local job_key, reply = KEYS[2 * i], KEYS[2 * i + 1]
  local entry, id = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  local found = redis.call('XRANGE', KEYS[1], entry, entry)[1]
  local delivered = #redis.call('XPENDING', KEYS[1], ARGV[1], entry, entry, 1) > 0
  out[i] = 'kept'
  if found and not delivered then
    local state = redis.call('HGET', job_key, 'state')
    local payload = ''
    for j = 1, #found[2], 2 do
      if found[2][j] == 'd' then payload = found[2][j + 1] end
    end
    local deadline = tonumber(string.match(payload, '"deadline_ms":(%d+)'))
    if state == 'succeeded' or state == 'failed' or state == 'cancelled'
        or state == 'expired' then
      redis.call('XDEL', KEYS[1], entry)
      out[i] = 'ended'
    elseif deadline and now > deadline then
      local outcome = cjson.encode({v = 1, id = id, state = 'expired', finished_ms = now,
        error = {code = 'deadline_exceeded',
                 message = 'deadline passed while the job waited for a worker'}})
      if state then
        redis.call('HSET', job_key, 'state', 'expired', 'outcome', outcome, 'finished', now)
        redis.call('PEXPIRE', job_key, ARGV[2])
      end
      redis.call('XADD', reply, 'MAXLEN', '~', ARGV[4], '*', 'id', id, 'o', outcome)
      redis.call('PEXPIRE', reply, ARGV[3])
      redis.call('XDEL', KEYS[1], entry)
      out[i] = 'expired'
    end
  end
end
return out
