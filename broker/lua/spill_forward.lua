-- spill_forward: hand queued jobs over to copies already admitted on a provider pool.
-- For each entry still undelivered (after the group's last-delivered id) whose job is
-- still queued: delete the entry, mark the job 'forwarded' to its copy, drop it from its
-- tenant's jobs in flight here, and tell the caller on its reply stream, so it waits for
-- the copy instead. An entry a worker took
-- meanwhile is kept (the caller of this script then cancels its copy).
-- KEYS[1] priority stream   then per entry i (1..n), from K = 3i - 1: KEYS[K] job hash
--   KEYS[K+1] the caller's reply stream   KEYS[K+2] its tenant's jobs in flight (zset)
-- ARGV[1] group   ARGV[2] reply ttl ms   ARGV[3] reply stream max length
-- then per entry i, from A = 4 + 4(i-1): ARGV[A] entry id   ARGV[A+1] job id
--   ARGV[A+2] the copy's job id   ARGV[A+3] the copy's reply stream key
-- Returns one verdict per entry: 'forwarded' | 'kept'
-- Runs over maxmemory (admitted work must finish): its first write, XACK of id 0-0, is not
-- deny-oom (Redis 6.2 decides there), and on Redis 7 its shebang says allow-oom.
redis.call('XACK', KEYS[1], ARGV[1], '0-0')
local last = '0-0'
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local fields = {}
  for j = 1, #group, 2 do fields[group[j]] = group[j + 1] end
  if fields['name'] == ARGV[1] then last = fields['last-delivered-id'] end
end
local function after(a, b)  -- stream id a > stream id b
  local ams, aseq = a:match('^(%d+)-(%d+)$')
  local bms, bseq = b:match('^(%d+)-(%d+)$')
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams > bms or (ams == bms and aseq > bseq)
end
local out = {}
for i = 1, (#KEYS - 1) / 3 do
  local job_key, reply, tenant_jobs = KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1]
  local a = 4 + 4 * (i - 1)
  local entry, id, copy, copy_reply = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local state = redis.call('HGET', job_key, 'state')
  if after(entry, last) and state == 'queued' and redis.call('XDEL', KEYS[1], entry) == 1 then
    redis.call('HSET', job_key, 'state', 'forwarded', 'forward', copy)
    redis.call('ZREM', tenant_jobs, id)
    redis.call('XADD', reply, 'MAXLEN', '~', ARGV[3], '*', 'id', id, 'fwd', copy,
      'fr', copy_reply)
    redis.call('PEXPIRE', reply, ARGV[2])
    out[i] = 'forwarded'
  else
    out[i] = 'kept'
  end
end
return out
