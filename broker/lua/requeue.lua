-- requeue: put back the entries a dead (or hung) consumer held. For each entry still in
-- the stream: if its job already ended, just ack and delete it; else re-add it at the
-- tail with attempts + 1 (the envelope keeps its creation time and deadline), point the
-- job record at the new entry, ack and delete the old one. Past the attempt limit the
-- entry goes to the dead-letter stream instead and its job fails where its caller sees
-- it. An entry already gone (another watchdog, or its worker, got there first) is only
-- acked. Safe to run from several watchdogs at once.
-- KEYS[1] priority stream   KEYS[2] dead-letter stream
-- then per entry i (1..n): KEYS[2i+1] job hash   KEYS[2i+2] reply stream
-- ARGV[1] group   ARGV[2] most attempts   ARGV[3] why (for the error and dead letter)
-- ARGV[4] result ttl ms   ARGV[5] reply ttl ms   ARGV[6] reply stream max length
-- ARGV[7] dead-letter stream max length
-- then per entry i: ARGV[7+2i-1] entry id   ARGV[7+2i] job id
-- Returns one verdict per entry: 'requeued' | 'dead' | 'ended' | 'gone'
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local most = tonumber(ARGV[2])
local out = {}
for i = 1, (#KEYS - 2) / 2 do
  local job_key, reply = KEYS[2 * i + 1], KEYS[2 * i + 2]
  local entry, id = ARGV[6 + 2 * i], ARGV[7 + 2 * i]
  local found = redis.call('XRANGE', KEYS[1], entry, entry)[1]
  local state = redis.call('HGET', job_key, 'state')
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
    if attempts + 1 >= most then
      local message = ARGV[3] .. '; gave up after ' .. (attempts + 1) .. ' attempts'
      local outcome = '{"v":1,"id":"' .. id .. '","state":"failed","error":{"code":'
        .. '"attempts_exhausted","message":"' .. message .. '"},"finished_ms":' .. now .. '}'
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'source', KEYS[1],
        'entry', entry, 'job', id, 'reason', message, 'd', payload)
      if state then
        redis.call('HSET', job_key, 'state', 'failed', 'outcome', outcome, 'finished', now)
        redis.call('PEXPIRE', job_key, ARGV[4])
      end
      redis.call('XADD', reply, 'MAXLEN', '~', ARGV[6], '*', 'id', id, 'o', outcome)
      redis.call('PEXPIRE', reply, ARGV[5])
      out[i] = 'dead'
    else
      payload = string.gsub(payload, '"attempts":%d+', '"attempts":' .. (attempts + 1), 1)
      local new = redis.call('XADD', KEYS[1], '*', 'id', id, 'r', fields['r'] or reply,
        'd', payload)
      if state then
        redis.call('HSET', job_key, 'state', 'queued', 'entry', new)
      end
      out[i] = 'requeued'
    end
  end
  redis.call('XACK', KEYS[1], ARGV[1], entry)
  if found then redis.call('XDEL', KEYS[1], entry) end
end
return out
