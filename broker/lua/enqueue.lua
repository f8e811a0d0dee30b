-- enqueue: for each job in turn, idempotency check, admission check and XADD, atomically.
-- KEYS[1] priority stream   KEYS[2] drain hash of the stream
-- then per job i (1..n): KEYS[1+2i] job hash   KEYS[2+2i] idempotency key
-- ARGV[1] cap   ARGV[2] job ttl ms
-- then per job i: ARGV[4i-1] job id   ARGV[4i] envelope JSON   ARGV[4i+1] reply stream key
--                 ARGV[4i+2] idempotency ttl ms ('0': no idempotency key)
-- Returns one reply per job, in order:
--   {'admitted', job id, entry id, depth before} | {'duplicate', job id}
--   | {'rejected', depth, last rate, window start ms, count in window, now ms}
local cap = tonumber(ARGV[1])
local depth = redis.call('XLEN', KEYS[1])
local out = {}
local drain
for i = 1, (#KEYS - 2) / 2 do
  local job_key, idem_key = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  local id, payload, reply, idem_ttl = ARGV[4 * i - 1], ARGV[4 * i], ARGV[4 * i + 1], ARGV[4 * i + 2]
  local existing = idem_ttl ~= '0' and redis.call('GET', idem_key)
  if existing then
    out[i] = {'duplicate', existing}
  elseif depth >= cap then
    if not drain then
      local t = redis.call('TIME')
      local d = redis.call('HMGET', KEYS[2], 'rate', 'ws', 'n')
      drain = {d[1] or '0', d[2] or '0', d[3] or '0', t[1] * 1000 + math.floor(t[2] / 1000)}
    end
    out[i] = {'rejected', depth, drain[1], drain[2], drain[3], drain[4]}
  else
    local entry = redis.call('XADD', KEYS[1], '*', 'id', id, 'r', reply, 'd', payload)
    redis.call('HSET', job_key, 'state', 'queued', 'entry', entry, 'stream', KEYS[1], 'reply', reply)
    redis.call('PEXPIRE', job_key, ARGV[2])
    if idem_ttl ~= '0' then
      redis.call('SET', idem_key, id, 'PX', idem_ttl)
    end
    out[i] = {'admitted', id, entry, depth}
    depth = depth + 1
  end
end
return out
