-- enqueue: idempotency check, admission check and XADD, atomically.
-- KEYS[1] priority stream      KEYS[2] job hash
-- KEYS[3] idempotency key      KEYS[4] drain hash of the stream
-- ARGV[1] job id   ARGV[2] envelope JSON   ARGV[3] reply stream key   ARGV[4] cap
-- ARGV[5] job ttl ms   ARGV[6] idempotency ttl ms ('0': no idempotency key)
-- Returns {'admitted', job id, entry id, depth before}
--       | {'duplicate', job id}
--       | {'rejected', depth, last rate, window start ms, count in window, now ms}
local idem = ARGV[6] ~= '0'
if idem then
  local existing = redis.call('GET', KEYS[3])
  if existing then
    return {'duplicate', existing}
  end
end
local depth = redis.call('XLEN', KEYS[1])
if depth >= tonumber(ARGV[4]) then
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  local d = redis.call('HMGET', KEYS[4], 'rate', 'ws', 'n')
  return {'rejected', depth, d[1] or '0', d[2] or '0', d[3] or '0', now}
end
local entry = redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'r', ARGV[3], 'd', ARGV[2])
redis.call('HSET', KEYS[2], 'state', 'queued', 'entry', entry, 'stream', KEYS[1], 'reply', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
if idem then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[6])
end
return {'admitted', ARGV[1], entry, depth}
