-- breaker_record: the outcome of one call to a provider target. Trips (opens) the breaker
-- when: a half-open probe fails; ARGV[5] failures in a row; or, over the current window
-- of ARGV[2] ms with at least ARGV[3] calls, the failure rate reaches ARGV[4]; or at once
-- on 'fatal' (a rejected API key). Each trip in a row doubles the open time, from ARGV[6]
-- ms up to ARGV[7] ms. A success while half-open closes it. 'tripped' counts the trips
-- (for `switchyard exporter`), 'trips' those in a row.
-- KEYS[1] the target's breaker hash
-- ARGV[1] 'ok' | 'fail' | 'fatal'   ARGV[2] window ms   ARGV[3] min calls
-- ARGV[4] failure rate   ARGV[5] consecutive failures   ARGV[6] open ms
-- ARGV[7] max open ms   ARGV[8] how many calls this outcome stands for (successes come
--   in bulk)
-- Returns the state after: 'closed' | 'open' | 'half'
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local key, outcome = KEYS[1], ARGV[1]
local window = tonumber(ARGV[2])
redis.call('PEXPIRE', key, tonumber(ARGV[7]) + window)  -- first write, not deny-oom
local b = redis.call('HMGET', key, 'state', 'trips', 'consec', 'ws', 'calls', 'fails')
local state = b[1] or 'closed'
local trips, consec = tonumber(b[2]) or 0, tonumber(b[3]) or 0
local ws, calls, fails = tonumber(b[4]) or now, tonumber(b[5]) or 0, tonumber(b[6]) or 0
if now - ws >= window then
  ws, calls, fails = now, 0, 0
end
calls = calls + (tonumber(ARGV[8]) or 1)
if outcome == 'ok' then
  consec = 0
  if state == 'half' then
    state, trips, ws, calls, fails = 'closed', 0, now, 0, 0
  end
else
  consec, fails = consec + 1, fails + 1
  local rate = calls >= tonumber(ARGV[3]) and fails / calls >= tonumber(ARGV[4])
  if outcome == 'fatal' or state == 'half' or consec >= tonumber(ARGV[5]) or rate then
    trips = trips + 1
    local open = math.min(tonumber(ARGV[6]) * 2 ^ (trips - 1), tonumber(ARGV[7]))
    state, consec, ws, calls, fails = 'open', 0, now, 0, 0
    redis.call('HSET', key, 'until', now + math.floor(open))
    redis.call('HINCRBY', key, 'tripped', 1)  -- every trip, for the exporter
  end
end
redis.call('HSET', key, 'state', state, 'trips', trips, 'consec', consec, 'ws', ws,
  'calls', calls, 'fails', fails)
redis.call('PEXPIRE', key, tonumber(ARGV[7]) + window)
return state
