-- replay: put a dead letter back on its priority stream as a fresh attempt (the operator's
-- `switchyard dlq replay`). The job keeps its id; its record is reset to queued (the
-- failure its first caller saw stays in that caller's reply stream), so the new outcome
-- is what a later look-up by id finds; it keeps its reply stream, its tenant and its
-- owner. The dead letter is removed.
-- KEYS[1] dead-letter stream   KEYS[2] priority stream   KEYS[3] job hash
-- ARGV[1] dead-letter entry id   ARGV[2] job id   ARGV[3] reply stream key
-- ARGV[4] envelope JSON (attempts reset, deadline moved)   ARGV[5] job ttl ms
-- Returns the new entry id, or '' when the dead letter is gone (replayed or purged).
if not redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])[1] then
  return ''
end
ms(5)
local new = redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'r', ARGV[3], 'd', ARGV[4])
local kept = redis.call('HMGET', KEYS[3], 'tenant', 'owner')
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'state', 'queued', 'entry', new, 'stream', KEYS[2], 'reply', ARGV[3])
if kept[1] then redis.call('HSET', KEYS[3], 'tenant', kept[1]) end
if kept[2] then redis.call('HSET', KEYS[3], 'owner', kept[2]) end
redis.call('PEXPIRE', KEYS[3], ARGV[5])
redis.call('XDEL', KEYS[1], ARGV[1])
return new
