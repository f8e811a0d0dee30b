-- settle: end what reserve.lua began, or clear a key that outlived its job. Only a key
-- that still holds what the caller saw is changed (compare and set).
-- KEYS[1] idempotency key
-- ARGV[1] 'fill' (the reserved job was admitted: the key now names it) | 'drop'
-- ARGV[2] job id   ARGV[3] idempotency ttl ms (fill)   ARGV[4] 'reserved' | 'plain': what
--   the key held ('?' .. id .. '|' .. ms, or the id)
-- Returns 1 when the key was changed, else 0.
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local held = v == ARGV[2] and 'plain' or (string.match(v, '^%?([^|]*)|%d+$') == ARGV[2]
  and 'reserved') or nil
if held ~= ARGV[4] then return 0 end
if ARGV[1] == 'fill' then
  local ttl = ms(3)
  redis.call('PEXPIRE', KEYS[1], ttl)  -- first write not deny-oom: a fill runs over maxmemory
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
else
  redis.call('DEL', KEYS[1])
end
return 1
