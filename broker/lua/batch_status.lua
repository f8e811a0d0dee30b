-- batch_status: move a batch from one of some statuses to another, setting fields with it,
-- atomically: a worker finishing a batch and a caller cancelling it cannot both win.
-- KEYS[1] the batch's record (hash)
-- ARGV[1] the statuses it may move from, space-separated ('*': any)
-- ARGV[2] the new status ('': keep it, only set the fields)   ARGV[3] the record's ttl ms
-- then field/value pairs to set with it (ARGV[4], ARGV[5], ...)
-- Returns {1, the status now} when it moved (or, with ARGV[2] = '', when the fields were
-- set); {0, the status now ('' when there is no record)} otherwise.
-- Runs over maxmemory (a batch must be able to end): its first write, PEXPIRE, is not
-- deny-oom (Redis 6.2 decides there), and on Redis 7 its shebang says allow-oom.
local ttl = ms(3)
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {0, ''} end
if ARGV[1] ~= '*' and not string.find(' ' .. ARGV[1] .. ' ', ' ' .. current .. ' ', 1, true) then
  return {0, current}
end
if (#ARGV - 3) % 2 ~= 0 then error('batch_status: fields must come in pairs') end
redis.call('PEXPIRE', KEYS[1], ttl)
local status = ARGV[2] ~= '' and ARGV[2] or current
redis.call('HSET', KEYS[1], 'status', status, unpack(ARGV, 4))
return {1, status}
