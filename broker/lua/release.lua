-- release: hand an entry a worker read but never started back, to the retry lane of its
-- priority (read before the priority stream, so it keeps its turn), acking and removing
-- the old entry, so another consumer can take it.
-- KEYS[1] the entry's stream (priority stream or retry lane)   KEYS[2] job hash
-- KEYS[3] the retry lane   KEYS[4] held jobs (zset; the hold ends)
-- ARGV[1] group   ARGV[2] entry id   ARGV[3] job id   ARGV[4] reply stream key
-- ARGV[5] envelope JSON
-- Returns the new entry id, or '' when the job had already ended (entry just removed).
-- Runs over maxmemory (admitted work must finish): its first write, XACK of id 0-0, is not
-- deny-oom (Redis 6.2 decides there), and on Redis 7 its shebang says allow-oom.
redis.call('XACK', KEYS[1], ARGV[1], '0-0')
redis.call('ZREM', KEYS[4], ARGV[3])
local state = redis.call('HGET', KEYS[2], 'state')
local ended = state == 'succeeded' or state == 'failed' or state == 'cancelled' or state == 'expired'
local new = ''
if not ended then
  new = redis.call('XADD', KEYS[3], '*', 'id', ARGV[3], 'r', ARGV[4], 'd', ARGV[5])
  if state then
    redis.call('HSET', KEYS[2], 'state', 'queued', 'entry', new, 'stream', KEYS[3])
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return new
