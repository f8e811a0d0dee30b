-- forget: remove a consumer from a stream's group only if it holds no pending entry,
-- checked and done at once (a check, then DELCONSUMER, would drop entries the consumer
-- read in between: deleted with it, they are pending nowhere and never re-queued).
-- Runs over maxmemory: its first write, XACK of id 0-0, is not deny-oom, and on Redis 7
-- its shebang says allow-oom.
-- KEYS[1] stream   ARGV[1] group   ARGV[2] consumer
-- Returns 1 when the consumer was removed, else 0.
redis.call('XACK', KEYS[1], ARGV[1], '0-0')
local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if not ok then return 0 end  -- no stream or group
if #pending > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) >= 0 and 1 or 0
