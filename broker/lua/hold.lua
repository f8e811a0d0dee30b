-- hold: a worker reads new entries from some streams of one partition, and records their
-- jobs as held (read ahead, not started) in the same step, so there is no moment at which
-- an entry is pending on the worker but not known to be held.
-- Attempts count executions: `requeue` puts a held job back without spending an attempt,
-- and `start` (which the worker awaits before running a held job) ends the hold. Entries a
-- worker reads any other way (its blocking read when it had nothing buffered) are not
-- held: they count as started from the moment they are read, so a job that kills its
-- worker spends an attempt even if `start` never landed.
-- It also holds jobs of entries the worker read already (ARGV[5..]): what its blocking read
-- brought beyond the batch it runs first. Members older than ARGV[4] ms are dropped (their
-- holders vanished with no watchdog running), and the set expires that long after its
-- last hold.
-- KEYS[1] held jobs (zset: job id -> ms held)
-- KEYS[2..n] streams to read, of KEYS[1]'s partition (none: only hold ARGV[5..])
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] most entries per stream   ARGV[4] hold ttl ms
-- ARGV[5..] job ids read already, to hold
-- Returns the XREADGROUP reply ({} when nothing was read).
-- Runs over maxmemory (admitted work must finish): its first write, PEXPIRE, is not
-- deny-oom (Redis 6.2 decides there), and on Redis 7 its shebang says allow-oom.
ms(3, 1)
local ttl = ms(4, 1)
redis.call('PEXPIRE', KEYS[1], ttl)
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local now_s = tostring(now)  -- (the score of every member: converted once)
local added = {}
for i = 5, #ARGV do
  added[#added + 1] = now_s
  added[#added + 1] = ARGV[i]
end
local reply = {}
if #KEYS > 1 then
  local args = {'XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS'}
  for i = 2, #KEYS do args[#args + 1] = KEYS[i] end
  for _ = 2, #KEYS do args[#args + 1] = '>' end
  reply = redis.call(unpack(args)) or {}
end
for _, stream in ipairs(reply) do
  for _, entry in ipairs(stream[2]) do
    local fields = entry[2]
    for j = 1, #fields, 2 do
      if fields[j] == 'id' then
        added[#added + 1] = now_s
        added[#added + 1] = fields[j + 1]
        break
      end
    end
  end
end
for i = 1, #added, 1000 do
  redis.call('ZADD', KEYS[1], unpack(added, i, math.min(i + 999, #added)))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return reply
