-- enqueue: for each job in turn, idempotency check, admission checks and XADD, atomically.
-- All jobs of one call go to one stream, share the caller's reply stream and one tenant.
-- KEYS[1] priority stream   KEYS[2] drain hash of the stream
-- then per job i (1..n), K = 1 + idempotency: KEYS[2+K(i-1)+1] job hash
--   [KEYS[2+K(i-1)+2] idempotency key, with idempotency]
-- then, with ARGV[18] = '1': the partition's 3 priority streams, highest first, and
--   their 3 drain hashes (ARGV[5], ARGV[6] and ARGV[8] need them)
-- then, with a tenant (ARGV[10] ~= ''): the tenant's jobs in flight (zsets) in this stream
--   and in the partition's two others, its buckets (hash), the partition's tenants seen
--   (zset: name -> last seen ms) and their weights (hash: name -> weight, '~sum' -> the
--   sum over the zset's members)
-- An idempotency key holds a job id, or '?' .. job id while another pool's admit has
-- reserved it (see reserve.lua): such a job is reported 'reserved'.
-- ARGV[1] cap (a ceiling, when ARGV[6] sizes it)   ARGV[2] job ttl ms   ARGV[3] reply stream
-- ARGV[4] idempotency ttl ms ('0': the jobs of this call carry no idempotency keys)
-- ARGV[5] spill ms ('0': never): a job whose predicted start is later is not admitted
--   but answered 'spill' (its route sends it to an overflow pool, or its caller is told
--   'deadline_unmeetable'). The prediction: what is queued at this priority and above,
--   over what the pool drains less what the higher priorities take (their drain rate,
--   or their admission rate when more: a burst of theirs leaves this one nothing), and
--   no more than this stream's own measured drain rate. Workers serve higher priorities first, so the jobs ahead of this one
--   are those, and higher-priority work still arriving takes its share of the pool.
--   A pool that drains but leaves nothing to this priority admits nothing while any of
--   that is queued.
-- ARGV[6] wait target ms ('0': the cap is fixed): the cap becomes what the stream can drain
--   within the target, at least ARGV[7] and at most ARGV[1]. What it can drain: its own
--   measured rate, or what the pool drains less what higher priorities take, whichever is
--   more (a stream that gets little work drains little, yet could take the pool's time)
-- ARGV[8] shed ms ('0': never): when the partition's whole backlog (all priorities) takes
--   longer than this to drain at their measured rates, the jobs are refused ('shed')
-- ARGV[9] age gate ms ('0': off; needs ARGV[6]): once the oldest entry not yet delivered to
--   the consumer group 'workers' has been older than the wait target for this long,
--   refuse ('aged') until it is younger again
-- ARGV[10] tenant ('': tenants not tracked)   ARGV[11] its weight   ARGV[12] requests/s
--   ARGV[13] request bucket size   ARGV[14] tokens/min   ARGV[15] most jobs in flight
--   (12, 14, 15: '0' is no limit)   ARGV[16] fill of the cap past which a tenant is held
--   to its weighted share of it ('0': never). A tenant below its share is admitted past a
--   full cap or a shut age gate (never past ARGV[1]): the tenants over theirs are refused.
-- ARGV[17] the jobs' owner, the tenant that submitted them ('': none), kept in each job hash
-- ARGV[18] '1' when the partition's streams and drain hashes follow the jobs' keys
-- then per job i, from A = 19 + 4(i-1): ARGV[A] job id   ARGV[A+1] envelope JSON
--   ARGV[A+2] tokens (for the tokens/min bucket)   ARGV[A+3] deadline, ms from now on
--   the Redis clock ('0': none): the envelope's "deadline_ms" is set to now + this, so a
--   client's clock skew changes nothing; the job hash keeps it as 'deadline'
-- Returns one reply per job, in order:
--   {'admitted', job id, entry id, depth before, drain rate ('' when not measured),
--    deadline ms since the epoch (Redis clock; '' for none), predicted start ms ('')}
--   | {'duplicate', job id} | {'reserved', job id, ms since reserved}
--   | {'rejected', depth, last rate (with ARGV[6]: the rate the cap was sized from),
--      window start ms, count in window, now ms, cap}
--   | {'spill', jobs ahead, the drain rate they were predicted at}
--   | {'shed', backlog, total drain rate}
--   | {'aged', depth, drain rate, oldest age ms}
--   | {'tenant', 'rps'|'tpm'|'concurrent'|'share', retry after s ('': unknown)}
-- Counted in the drain hash (KEYS[2]) for `switchyard exporter`, per call, not per job:
-- 'c:<verdict>' ('c:tenant:<reason>' for a tenant's), the admitted ones in the writes the
-- call makes anyway, the others one HINCRBY a kind; the jobs offered this minute (not
-- duplicates) and their tokens, in a ring of 60 minutes: field 'm<i>' the minute (epoch
-- minutes, i = minute mod 60), 'a<i>' the jobs, 't<i>' the tokens (ARGV's estimates),
-- read with the drain window and written with the first write; 'cap' the cap in force
-- where it is sized (ARGV[6]), when it changed (a fixed cap is the config's).
-- ('at', the time of the last call, is no longer written: nothing read it.)
-- Work per call is bounded whatever the data: at most 100 expired jobs and 100 stale
-- tenants are cleared per call, and nothing reads a whole hash, set or stream.
-- Admission honours maxmemory: on Redis 7 the script is flagged (a shebang without
-- allow-oom); on 6.2 its first write is a deny-oom command (the HSET of the arrivals,
-- after the reads that size the cap), so over maxmemory it fails before writing anything.
-- ARGV is checked before that write.
ms(2)
for _, i in ipairs({4, 5, 6, 8, 9}) do ms(i, 0) end  -- times, '0' for off (caps: any size)
if not tonumber(ARGV[1]) or not tonumber(ARGV[7]) then error('enqueue: caps must be numbers') end
local cap, reply, idem_ttl = tonumber(ARGV[1]), ARGV[3], ARGV[4]
local spill, wait_target, shed = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[8])
local gate, tenant = tonumber(ARGV[9]), ARGV[10]
local per = idem_ttl == '0' and 1 or 2
local pooled = ARGV[18] == '1'
local tail = (pooled and 6 or 0) + (tenant ~= '' and 6 or 0)
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local depth = redis.call('XLEN', KEYS[1])
local base_depth = depth

local function rate_in(d)  -- jobs/s drained: the last full window, else the current one
  local age = now - (tonumber(d[2]) or 0)  -- (from 100 ms on); 0 if idle 5 s
  if age > 5000 then return 0 end
  local r = tonumber(d[1])
  if r then return r end
  return age >= 100 and (tonumber(d[3]) or 0) * 1000 / age or 0
end
local function rate_of(key)
  return rate_in(redis.call('HMGET', key, 'rate', 'ws', 'n'))
end

-- This stream's drain hash: its window, the cap last written, and this minute's slot of the
-- arrivals ring. (Numbers are turned into strings only where they must be: each costs a
-- sprintf.)
local minute = math.floor(now / 60000)
local slot = tostring(minute % 60)
local m_at, a_at, t_at = 'm' .. slot, 'a' .. slot, 't' .. slot
local own = redis.call('HMGET', KEYS[2], 'rate', 'ws', 'n', 'cap', m_at, a_at, t_at)
local rate = rate_in(own)
local jobs = (#KEYS - 2 - tail) / per
local offered_tokens = 0  -- (duplicates are taken off after the loop, the rare case)
for i = 1, jobs do offered_tokens = offered_tokens + (tonumber(ARGV[21 + 4 * (i - 1)]) or 0) end
local this_minute = tonumber(own[5]) == minute
local arrived = (this_minute and tonumber(own[6]) or 0) + jobs
local arrived_tokens = (this_minute and tonumber(own[7]) or 0) + offered_tokens
local first = #KEYS - tail + 1  -- the partition's streams, then their drain hashes
if wait_target > 0 then
  local total, higher, mine = 0, 0, false
  for j = first, first + 2 do
    local r = rate_of(KEYS[j + 3])
    total = total + r
    if KEYS[j] == KEYS[1] then mine = true elseif not mine then higher = higher + r end
  end
  rate = math.max(rate, total - higher)
  cap = math.min(cap, math.max(tonumber(ARGV[7]), math.floor(rate * wait_target / 1000)))
end
-- The first write, deny-oom (see above): the arrivals counted (a new minute's slot takes
-- its minute), and the cap when it changed.
if not this_minute then
  redis.call('HSET', KEYS[2], m_at, minute, a_at, arrived, t_at, arrived_tokens)
else
  redis.call('HSET', KEYS[2], a_at, arrived, t_at, arrived_tokens)
end
if wait_target > 0 and tonumber(own[4]) ~= cap then redis.call('HSET', KEYS[2], 'cap', cap) end

-- The predicted start of the next job here (see ARGV[5]): `ahead` grows as jobs are admitted.
local function admitted_rate(key)  -- jobs/s admitted lately (see the end of this script)
  local d = redis.call('HMGET', key, 'arate', 'aws', 'an')
  local age = now - (tonumber(d[2]) or 0)
  if age > 5000 then return 0 end
  local r = tonumber(d[1]) or 0
  return age >= 100 and math.max(r, (tonumber(d[3]) or 0) * 1000 / age) or r
end
local ahead, avail, known = depth, rate, rate > 0
if pooled and spill > 0 then
  local total, taken, mine = 0, 0, false
  for j = first, first + 2 do
    local r = rate_of(KEYS[j + 3])
    total = total + r
    if KEYS[j] == KEYS[1] then mine = true
    elseif not mine then  -- a higher priority: served first, what it is sent included
      taken = taken + math.max(r, admitted_rate(KEYS[j + 3]))
      ahead = ahead + redis.call('XLEN', KEYS[j])
    end
  end
  -- What the pool drains less what the higher priorities take (drained, or admitted
  -- when more: a burst of theirs leaves this one nothing); no more than this stream's own
  -- measured rate while it is backed up (a second of its own drain queued). But with
  -- less than a second of the pool's drain ahead, the pool is keeping up and what is ahead
  -- drains at its whole rate: a priority fed below its share drains only what it is
  -- sent, which is no measure of what it could get (issue 21: at half load, 26 % of a
  -- mix was refused as deadline_unmeetable).
  avail, known = total - taken, total > 0
  if ahead < total then avail = total
  elseif rate > 0 and depth >= rate then avail = math.min(rate, avail) end
end
local function too_late()
  if spill <= 0 or ahead == 0 or not known then return false end
  return avail <= 0 or ahead * 1000 / avail > spill
end

local function closed_by_age()  -- the oldest undelivered entry's age if the gate is shut
  local last = '0-0'
  if depth > 0 then
    for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
      if group[2] == 'workers' then
        for j = 1, #group, 2 do
          if group[j] == 'last-delivered-id' then last = group[j + 1] end
        end
      end
    end
  end
  local head = depth > 0 and redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)[1]
  local age = head and now - tonumber(string.match(head[1], '^(%d+)')) or 0
  if age <= wait_target then
    redis.call('HDEL', KEYS[2], 'above')
    return nil
  end
  -- That entry alone shows the head has been past the target since `since`; a stretch
  -- seen by an earlier call still counts if it was looked at within the interval.
  local g = redis.call('HMGET', KEYS[2], 'above', 'seen')
  local since, above = now - (age - wait_target), tonumber(g[1])
  if above and now - (tonumber(g[2]) or 0) <= gate then since = math.min(above, since) end
  redis.call('HSET', KEYS[2], 'above', since, 'seen', now)
  if now - since >= gate then return age end
  return nil
end

local refused  -- one reply for every job of this call
if shed > 0 then
  local backlog, total = 0, 0
  for j = first, first + 2 do
    backlog = backlog + redis.call('XLEN', KEYS[j])
    total = total + rate_of(KEYS[j + 3])
  end
  if total > 0 and backlog * 1000 / total > shed then
    refused = {'shed', backlog, tostring(total)}
  end
end
local aged  -- the age gate's reply, when it is shut
if not refused and gate > 0 and wait_target > 0 then
  local age = closed_by_age()
  if age then aged = {'aged', depth, tostring(rate), age} end
end

local tk = #KEYS - 5  -- the tenant's keys
local tjobs, tquota, seen, weights = KEYS[tk], KEYS[tk + 3], KEYS[tk + 4], KEYS[tk + 5]
local weight, rps, bucket = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local tpm, most, share_at = tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16])
local owner = ARGV[17]
local inflight, here, share, reqs, toks = 0, 0, nil, 0, 0  -- in all streams, in this one

local function active_weight()  -- the weights of the tenants seen in the last 10 s
  local g = redis.call('HMGET', weights, tenant, '~sum')
  local last, sum = redis.call('ZSCORE', seen, tenant), tonumber(g[2]) or 0
  if not last or now - tonumber(last) >= 1000 or tonumber(g[1]) ~= weight then
    sum = sum + weight - (last and tonumber(g[1]) or 0)
    redis.call('ZADD', seen, now, tenant)
    redis.call('HSET', weights, tenant, weight)
  end
  local stale = redis.call('ZRANGEBYSCORE', seen, '-inf', now - 10000, 'LIMIT', 0, 100)
  if #stale > 0 then
    for _, w in ipairs(redis.call('HMGET', weights, unpack(stale))) do
      sum = sum - (tonumber(w) or 0)
    end
    redis.call('ZREM', seen, unpack(stale))
    redis.call('HDEL', weights, unpack(stale))
  end
  if redis.call('ZCARD', seen) == 0 then sum = 0 end
  redis.call('HSET', weights, '~sum', tostring(sum))
  redis.call('PEXPIRE', seen, 3600000)
  redis.call('PEXPIRE', weights, 3600000)
  return sum
end

if tenant ~= '' then
  for j = tk, tk + 2 do
    local ended = redis.call('ZRANGEBYSCORE', KEYS[j], '-inf', now, 'LIMIT', 0, 100)
    if #ended > 0 then redis.call('ZREM', KEYS[j], unpack(ended)) end  -- past their deadline
    inflight = inflight + redis.call('ZCARD', KEYS[j])
  end
  here = redis.call('ZCARD', tjobs)
  local total = active_weight()
  if share_at > 0 and (depth >= share_at * cap or aged) and total > weight then
    share = math.max(1, math.floor(cap * weight / total))
  end
  local q = redis.call('HMGET', tquota, 'r', 't', 'ts')
  local elapsed = (now - (tonumber(q[3]) or now)) / 1000
  reqs = math.min(bucket, (tonumber(q[1]) or bucket) + elapsed * rps)
  toks = math.min(tpm, (tonumber(q[2]) or tpm) + elapsed * tpm / 60)
end

local function over_quota(tokens)  -- why the tenant may not have one more job, if so
  local wait = rate > 0 and 1 / rate or nil
  if most > 0 and inflight >= most then
    return {'tenant', 'concurrent', wait and tostring((inflight - most + 1) * wait) or ''}
  elseif share and here >= share then
    return {'tenant', 'share', wait and tostring((here - share + 1) * wait) or ''}
  elseif rps > 0 and reqs < 1 then
    return {'tenant', 'rps', tostring((1 - reqs) / rps)}
  elseif tpm > 0 and toks < tokens then
    return {'tenant', 'tpm', tokens > tpm and '' or tostring((tokens - toks) * 60 / tpm)}
  end
  return nil
end

local out, drain = {}, nil
local rate_s = rate > 0 and tostring(rate) or ''
for i = 1, jobs do
  local job_key, idem_key = KEYS[3 + per * (i - 1)], KEYS[4 + per * (i - 1)]
  local a = 19 + 4 * (i - 1)
  local id = ARGV[a]
  local tokens = tenant ~= '' and tonumber(ARGV[a + 2]) or 0  -- (a quota's only)
  local existing = per == 2 and redis.call('GET', idem_key)
  local reserved = existing and string.sub(existing, 1, 1) == '?'
  local quota = tenant ~= '' and not existing and not refused and over_quota(tokens)
  -- A full stream, or a shut age gate, still takes a tenant below its weighted share of
  -- it (up to the fixed ceiling): the tenants over theirs are the ones turned away.
  local below = share and here < share and depth < tonumber(ARGV[1])
  if reserved then  -- '?' .. job id .. '|' .. ms when reserved
    local rid, at = string.match(existing, '^%?([^|]*)|(%d+)$')
    out[i] = {'reserved', rid or '', now - (tonumber(at) or now)}
  elseif existing then
    out[i] = {'duplicate', existing}
  elseif refused then
    out[i] = refused
  elseif too_late() then
    out[i] = {'spill', ahead, tostring(avail)}
  elseif quota then
    out[i] = quota
  elseif aged and not below then
    out[i] = aged
  elseif depth >= cap and not below then
    if not drain then
      local d = own  -- (its rate, ws and n, as read at the start: unchanged since)
      drain = {wait_target > 0 and tostring(rate) or d[1] or '0', d[2] or '0', d[3] or '0', now}
    end
    out[i] = {'rejected', depth, drain[1], drain[2], drain[3], drain[4], cap}
  else
    local within, payload = tonumber(ARGV[a + 3]), ARGV[a + 1]
    local deadline = within > 0 and tostring(now + within) or nil  -- (one conversion a job)
    if deadline then
      payload = string.gsub(payload, '"deadline_ms":%-?%d+', '"deadline_ms":' .. deadline, 1)
    end
    local entry = redis.call('XADD', KEYS[1], '*', 'id', id, 'r', reply, 'd', payload)
    if deadline then  -- (one HSET a job: every job has a deadline unless its caller says 0)
      redis.call('HSET', job_key, 'state', 'queued', 'entry', entry, 'stream', KEYS[1],
        'reply', reply, 'deadline', deadline)
    else
      redis.call('HSET', job_key, 'state', 'queued', 'entry', entry, 'stream', KEYS[1],
        'reply', reply)
    end
    if owner ~= '' then redis.call('HSET', job_key, 'owner', owner) end
    redis.call('PEXPIRE', job_key, ARGV[2])
    if per == 2 then
      redis.call('SET', idem_key, id, 'PX', idem_ttl)
    end
    if tenant ~= '' then
      redis.call('ZADD', tjobs, deadline or now + ARGV[2], id)
      redis.call('HSET', job_key, 'tenant', tenant)
      inflight, here, reqs, toks = inflight + 1, here + 1, reqs - 1, toks - tokens
    end
    local start = avail > 0 and math.floor(ahead * 1000 / avail) or nil
    out[i] = {'admitted', id, entry, depth, rate_s, deadline or '',
              start and tostring(start) or ''}
    depth, ahead = depth + 1, ahead + 1
  end
end
-- The admission window (admitted jobs/s, for the predictions of lower priorities):
-- a rate per half second, like the drain window's per second.
-- Its writes also count the admitted jobs ('c:admitted', for the exporter).
local admitted = depth - base_depth
if pooled then
  local w = redis.call('HMGET', KEYS[2], 'aws', 'an', 'c:admitted')
  local aws, an, counted = tonumber(w[1]), tonumber(w[2]) or 0, (tonumber(w[3]) or 0) + admitted
  if not aws or now - aws > 5000 then
    redis.call('HSET', KEYS[2], 'aws', now, 'an', admitted, 'c:admitted', counted)
    redis.call('HDEL', KEYS[2], 'arate')
  elseif now - aws >= 500 then
    redis.call('HSET', KEYS[2], 'arate', string.format('%.3f', (an + admitted) * 1000 / (now - aws)),
      'aws', now, 'an', 0, 'c:admitted', counted)
  elseif admitted > 0 then
    redis.call('HSET', KEYS[2], 'an', an + admitted, 'c:admitted', counted)
  end
elseif admitted > 0 then
  redis.call('HINCRBY', KEYS[2], 'c:admitted', admitted)
end
-- The other verdicts, one HINCRBY a kind (most calls admit every job: none); duplicates
-- were counted as arrivals, and are taken off.
if admitted < jobs then
  local counts, dups, dup_tokens = {}, 0, 0
  for i = 1, jobs do
    local v = out[i][1]
    if v ~= 'admitted' then
      if v == 'duplicate' or v == 'reserved' then
        dups, dup_tokens = dups + 1, dup_tokens + (tonumber(ARGV[21 + 4 * (i - 1)]) or 0)
      end
      v = v == 'tenant' and 'c:tenant:' .. out[i][2] or 'c:' .. v
      counts[v] = (counts[v] or 0) + 1
    end
  end
  for v, n in pairs(counts) do redis.call('HINCRBY', KEYS[2], v, n) end
  if dups > 0 then
    redis.call('HSET', KEYS[2], a_at, arrived - dups, t_at, arrived_tokens - dup_tokens)
  end
end
if tenant ~= '' then
  redis.call('HSET', tquota, 'r', tostring(reqs), 't', tostring(toks), 'ts', now)
  redis.call('PEXPIRE', tquota, 3600000)
  redis.call('PEXPIRE', tjobs, ARGV[2])
end
return out
