-- beat: a worker's heartbeat: its description hash (with a TTL) and its score in the
-- pool's registry of live workers, dropping entries ten TTLs old. Runs over maxmemory (a
-- worker must keep beating to finish admitted work): its first write, PEXPIRE, is not
-- deny-oom (Redis 6.2 decides there), and on Redis 7 its shebang says allow-oom.
-- KEYS[1] the worker's hash   KEYS[2] the pool's registry (zset)
-- ARGV[1] consumer   ARGV[2] ttl ms   ARGV[3] now ms (the worker's clock, as readers use)
-- then field, value pairs
-- Returns 1.
local ttl = ms(2)
redis.call('PEXPIRE', KEYS[1], ttl)
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], 'beat_ms', ARGV[3], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - 10 * ttl)
return 1
