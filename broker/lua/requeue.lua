-- requeue: put back entries whose consumer died, hung, or failed them (for each entry
-- still in the stream):
--   its job already ended         -> ack and delete the entry ('ended');
--   its deadline passed           -> the job expires where its caller sees it ('expired');
--   it had started, and attempts + 1 reach the limit
--                                 -> the entry goes to the dead-letter stream and its job
--                                    fails with ARGV[3] and ARGV[4] ('dead');
--   otherwise                     -> re-added to the retry lane KEYS[3] (read before the
--                                    priority stream: it does not queue behind jobs that
--                                    came later), the job record pointed at the new entry
--                                    ('requeued'); with attempts + 1 if it had started
--                                    (the envelope keeps its creation time and deadline).
-- Attempts count executions, not deliveries: a job counts as started unless it is still
-- queued and held (read ahead by `hold`, whose hold `start` ends before the worker runs
-- it); an entry read any other way counts as started as soon as it is read. So entries a
-- worker held but never started (prefetched) go back as they were, however often their
-- workers die, while a job that kills every worker running it uses up its attempts. A job
-- whose record is gone counts as started. Every entry's hold ends here.
-- An entry already gone (another watchdog, or its worker, got there first) is only acked
-- ('gone'). Safe to run from several watchdogs at once.
-- KEYS[1] the entries' stream (priority stream or retry lane)   KEYS[2] dead-letter stream
-- KEYS[3] the retry lane of KEYS[1]'s priority   KEYS[4] held jobs (zset)
-- then per entry i (1..n): KEYS[2i+3] job hash   KEYS[2i+4] reply stream
-- ARGV[1] group   ARGV[2] most attempts   ARGV[3] error code   ARGV[4] why (plain text)
-- ARGV[5] result ttl ms   ARGV[6] reply ttl ms   ARGV[7] reply stream max length
-- ARGV[8] dead-letter stream max length
-- then per entry i: ARGV[8+2i-1] entry id   ARGV[8+2i] job id
-- Returns one verdict per entry: 'requeued' | 'dead' | 'expired' | 'ended' | 'gone'
-- Runs over maxmemory (admitted work must finish): its first write, XACK of id 0-0, is not
-- deny-oom (Redis 6.2 decides there), and on Redis 7 its shebang says allow-oom.
for _, i in ipairs({5, 6, 7, 8}) do ms(i) end
redis.call('XACK', KEYS[1], ARGV[1], '0-0')
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local most = tonumber(ARGV[2])
local out = {}

local function fail(job_key, reply, id, state, final, code, message)
  local outcome = cjson.encode({v = 1, id = id, state = final, finished_ms = now,
    error = {code = code, message = message}})
  if state then
    redis.call('HSET', job_key, 'state', final, 'outcome', outcome, 'finished', now)
    redis.call('PEXPIRE', job_key, ARGV[5])
  end
  redis.call('XADD', reply, 'MAXLEN', '~', ARGV[7], '*', 'id', id, 'o', outcome)
  redis.call('PEXPIRE', reply, ARGV[6])
end

for i = 1, (#KEYS - 4) / 2 do
  local job_key, reply = KEYS[2 * i + 3], KEYS[2 * i + 4]
  local entry, id = ARGV[7 + 2 * i], ARGV[8 + 2 * i]
  local found = redis.call('XRANGE', KEYS[1], entry, entry)[1]
  local state = redis.call('HGET', job_key, 'state')
  local started = state ~= 'queued' or not redis.call('ZSCORE', KEYS[4], id)
  redis.call('ZREM', KEYS[4], id)
  if not found then
    out[i] = 'gone'
  elseif state == 'succeeded' or state == 'failed' or state == 'cancelled'
      or state == 'expired' then
    out[i] = 'ended'
  else
    local fields = {}
    for j = 1, #found[2], 2 do fields[found[2][j]] = found[2][j + 1] end
    local payload = fields['d'] or ''
    local attempts = tonumber(string.match(payload, '"attempts":(%d+)')) or 0
    local deadline = tonumber(string.match(payload, '"deadline_ms":(%d+)'))
    if deadline and now > deadline then
      fail(job_key, reply, id, state, 'expired', 'deadline_exceeded',
        'deadline passed before the job could run again (' .. ARGV[4] .. ')')
      out[i] = 'expired'
    elseif started and attempts + 1 >= most then
      local message = ARGV[4] .. '; gave up after ' .. (attempts + 1) .. ' attempts'
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'source', KEYS[1],
        'entry', entry, 'job', id, 'r', fields['r'] or reply, 'reason', message, 'd', payload)
      fail(job_key, reply, id, state, 'failed', ARGV[3], message)
      out[i] = 'dead'
    else
      if started then
        payload = string.gsub(payload, '"attempts":%d+', '"attempts":' .. (attempts + 1), 1)
      end
      local new = redis.call('XADD', KEYS[3], '*', 'id', id, 'r', fields['r'] or reply,
        'd', payload)
      if state then
        redis.call('HSET', job_key, 'state', 'queued', 'entry', new, 'stream', KEYS[3])
      end
      out[i] = 'requeued'
    end
  end
  redis.call('XACK', KEYS[1], ARGV[1], entry)
  if found then redis.call('XDEL', KEYS[1], entry) end
end
return out
