-- groups: create the consumer group on each stream of one partition (MKSTREAM), unless it
-- has it already. Runs over maxmemory, so a worker can start there and finish the work
-- admitted before: its first write, XACK of id 0-0, is not deny-oom (Redis 6.2 decides
-- there), and on Redis 7 its shebang says allow-oom.
-- KEYS[1..n] streams   ARGV[1] group
-- Returns how many groups it created.
redis.call('XACK', KEYS[1], ARGV[1], '0-0')
local made = 0
for i = 1, #KEYS do
  local r = redis.pcall('XGROUP', 'CREATE', KEYS[i], ARGV[1], '0', 'MKSTREAM')
  if type(r) == 'table' and r.err then
    if not string.find(r.err, 'BUSYGROUP', 1, true) then return r end
  else
    made = made + 1
  end
end
return made
