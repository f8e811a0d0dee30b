-- enqueue: for each job in turn, idempotency check, admission check and XADD, atomically.
-- All jobs of one call go to one stream and share the caller's reply stream.
-- KEYS[1] priority stream   KEYS[2] drain hash of the stream
-- then per job i (1..n), K = 1 + idempotency: KEYS[2+K(i-1)+1] job hash
--   [KEYS[2+K(i-1)+2] idempotency key, with idempotency]
-- ARGV[1] cap (a ceiling, when ARGV[6] sizes it)   ARGV[2] job ttl ms   ARGV[3] reply stream
-- ARGV[4] idempotency ttl ms ('0': the jobs of this call carry no idempotency keys)
-- ARGV[5] spill ms ('0': never): a job whose predicted wait (depth / drain rate) is longer
--   is not admitted but answered 'spill' (its route sends it to an overflow pool)
-- ARGV[6] wait target ms ('0': the cap is fixed): the cap becomes what the stream drains
--   within the target (drain rate x target), at least ARGV[7] and at most ARGV[1]
-- ARGV[8] shed ms ('0': never): when the partition's whole backlog (all priorities) takes
--   longer than this to drain at their measured rates, the jobs are refused ('shed'); the
--   last 6 KEYS are then the partition's 3 priority streams and their 3 drain hashes
-- then per job i: ARGV[9+2(i-1)] job id   ARGV[10+2(i-1)] envelope JSON
-- Returns one reply per job, in order:
--   {'admitted', job id, entry id, depth before, drain rate ('' when not measured)}
--   | {'duplicate', job id}
--   | {'rejected', depth, last rate, window start ms, count in window, now ms, cap}
--   | {'spill', depth, drain rate} | {'shed', backlog, total drain rate}
local cap, reply, idem_ttl, spill = tonumber(ARGV[1]), ARGV[3], ARGV[4], tonumber(ARGV[5])
local wait_target, shed = tonumber(ARGV[6]), tonumber(ARGV[8])
local extra = shed > 0 and 6 or 0
local per = idem_ttl == '0' and 1 or 2
local depth = redis.call('XLEN', KEYS[1])
local out = {}
local drain, rate
if (spill > 0 and depth > 0) or wait_target > 0 then
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  local d = redis.call('HMGET', KEYS[2], 'rate', 'ws')
  rate = tonumber(d[1]) or 0
  if now - (tonumber(d[2]) or 0) > 5000 then
    rate = 0  -- nothing drained lately: no prediction (a dead pool is seen by the client)
  end
  if wait_target > 0 then
    cap = math.min(cap, math.max(tonumber(ARGV[7]), math.floor(rate * wait_target / 1000)))
  end
end
local shed_out
if shed > 0 then
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  local backlog, total = 0, 0
  for j = #KEYS - 5, #KEYS - 3 do
    backlog = backlog + redis.call('XLEN', KEYS[j])
  end
  for j = #KEYS - 2, #KEYS do
    local d = redis.call('HMGET', KEYS[j], 'rate', 'ws')
    if now - (tonumber(d[2]) or 0) <= 5000 then
      total = total + (tonumber(d[1]) or 0)
    end
  end
  if total > 0 and backlog * 1000 / total > shed then
    shed_out = {'shed', backlog, tostring(total)}
  end
end
for i = 1, (#KEYS - 2 - extra) / per do
  local job_key = KEYS[3 + per * (i - 1)]
  local idem_key = KEYS[4 + per * (i - 1)]
  local id, payload = ARGV[7 + 2 * i], ARGV[8 + 2 * i]
  local existing = per == 2 and redis.call('GET', idem_key)
  if existing then
    out[i] = {'duplicate', existing}
  elseif shed_out then
    out[i] = shed_out
  elseif spill > 0 and rate and rate > 0 and depth * 1000 / rate > spill then
    out[i] = {'spill', depth, tostring(rate)}
  elseif depth >= cap then
    if not drain then
      local t = redis.call('TIME')
      local d = redis.call('HMGET', KEYS[2], 'rate', 'ws', 'n')
      drain = {d[1] or '0', d[2] or '0', d[3] or '0', t[1] * 1000 + math.floor(t[2] / 1000)}
    end
    out[i] = {'rejected', depth, drain[1], drain[2], drain[3], drain[4], cap}
  else
    local entry = redis.call('XADD', KEYS[1], '*', 'id', id, 'r', reply, 'd', payload)
    redis.call('HSET', job_key, 'state', 'queued', 'entry', entry, 'stream', KEYS[1], 'reply', reply)
    redis.call('PEXPIRE', job_key, ARGV[2])
    if per == 2 then
      redis.call('SET', idem_key, id, 'PX', idem_ttl)
    end
    out[i] = {'admitted', id, entry, depth, rate and tostring(rate) or ''}
    depth = depth + 1
  end
end
return out
