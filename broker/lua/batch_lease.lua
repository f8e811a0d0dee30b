-- batch_lease: take, renew or drop a batch's lease, the token of the batch worker running
-- it, so that one worker at a time runs a batch and another takes it up once it lapses.
-- KEYS[1] the lease
-- ARGV[1] token   ARGV[2] 'take' | 'renew' | 'drop'   ARGV[3] lease ms (take and renew)
-- take: the lease is free, or this token's already; renew and drop: only this token's.
-- Returns 1 when done; 0 when another token holds it (or, renewing, none does).
-- Runs over maxmemory: SET and DEL are how a running batch keeps or ends its turn.
local held = redis.call('GET', KEYS[1])
if ARGV[2] == 'drop' then
  if held == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
  end
  return 0
end
local ttl = ms(3)
if held == ARGV[1] or (not held and ARGV[2] == 'take') then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  return 1
end
return 0
