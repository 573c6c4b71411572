-- Decide a batch of events of one Kafka partition, atomically: the contract's lease
-- rules, the per-user event clock, pruning of expired leases, and effectively-once
-- bookkeeping (applied offset, stored results, recent eventIds), in one call.
--
-- KEYS[1]     partition hash  sc:{<events topic>:<partition>}:p   fields: epoch, applied
-- KEYS[1+i]   state of the user of event i  sc:{<events topic>:<partition>}:u:<userId>
-- ARGV[1]     epoch taken by the caller when it was assigned the partition
-- ARGV[2]     max streams          ARGV[3] lease TTL ms      ARGV[4] 'reject' | 'evict_oldest'
-- ARGV[5]     committed offset: results of offsets below it are no longer needed (-1: none)
-- ARGV[6]     last offset of the batch, dead-lettered records included (becomes `applied`)
-- ARGV[7]     idle user key TTL ms ARGV[8] eventIds remembered per user
-- ARGV[9..]   seven per event: offset, type, sessionId, record timestamp ms,
--             eventId ('' = none), deviceId ('' = none), contentId ('' = none)
--
-- Returns 'FENCED:<epoch>' when a newer owner took the partition (nothing is written),
-- else a JSON array with one result per event:
--   [code, activeStreams, maxStreams, leaseExpiresAt (0 = none), now, [evicted sessionIds]?]
-- or [0] for an offset applied earlier whose result is no longer stored.
--
-- A user's state is one JSON string:
--   {c = clock, q = lease sequence, l = {sessionId = {e = expiry, q = seq, d = device, t = content}},
--    r = {{o = offset, i = eventId?, v = result}, ...}}   (r in offset order)

local part = KEYS[1]
local current = redis.call('HGET', part, 'epoch')
if current ~= ARGV[1] then
  return 'FENCED:' .. tostring(current)
end
local applied = tonumber(redis.call('HGET', part, 'applied') or '-1')
local max_streams = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local evict = ARGV[4] == 'evict_oldest'
local committed = tonumber(ARGV[5])
local last = tonumber(ARGV[6])
local idle_ttl = ARGV[7]
local memory = tonumber(ARGV[8])

local states = {}   -- user key -> decoded state, shared by the batch's events of that user
local dirty = {}

local function stored_by_offset(r, offset)
  for j = #r, 1, -1 do
    if r[j].o == offset then return r[j].v end
  end
  return nil
end

-- Only the `memory` most recent eventIds count (the reference model forgets older ones).
local function stored_by_event_id(r, event_id)
  local seen = 0
  for j = #r, 1, -1 do
    local id = r[j].i
    if id then
      if id == event_id then return r[j].v end
      seen = seen + 1
      if seen >= memory then return nil end
    end
  end
  return nil
end

local out = {}
local n = (#ARGV - 8) / 7
for i = 1, n do
  local b = 8 + (i - 1) * 7
  local offset = tonumber(ARGV[b + 1])
  local key = KEYS[1 + i]
  local s = states[key]
  if s == nil then
    local raw = redis.call('GET', key)
    if raw then
      s = cjson.decode(raw)
      if next(s.r) == nil then s.r = {} end
    else
      s = {c = 0, q = 0, l = {}, r = {}}
    end
    states[key] = s
  end
  local r = s.r

  if offset <= applied then
    -- A replay: answer with what was decided the first time, change nothing.
    out[i] = stored_by_offset(r, offset) or {0}
  else
    local event_id = ARGV[b + 5]
    local result = nil
    if event_id ~= '' then result = stored_by_event_id(r, event_id) end
    if result ~= nil then
      -- An upstream duplicate at a new offset: the first verdict again.
      r[#r + 1] = {o = offset, v = result}
    else
      local now = tonumber(ARGV[b + 4])
      if now < s.c then now = s.c end
      s.c = now
      local leases = s.l
      local active = 0
      for sid, lease in pairs(leases) do
        if lease.e <= now then leases[sid] = nil else active = active + 1 end
      end
      local kind = ARGV[b + 2]
      local sid = ARGV[b + 3]
      local lease = leases[sid]
      local code
      local evicted = nil
      if kind == 'start' then
        if lease then
          lease.e = now + ttl
          code = 2 -- already_active
        elseif active < max_streams or evict then
          while active >= max_streams do
            local oldest, oldest_q = nil, nil
            for osid, olease in pairs(leases) do
              if oldest_q == nil or olease.q < oldest_q then oldest, oldest_q = osid, olease.q end
            end
            leases[oldest] = nil
            active = active - 1
            evicted = evicted or {}
            evicted[#evicted + 1] = oldest
          end
          s.q = s.q + 1
          local new = {e = now + ttl, q = s.q}
          if ARGV[b + 6] ~= '' then new.d = ARGV[b + 6] end
          if ARGV[b + 7] ~= '' then new.t = ARGV[b + 7] end
          leases[sid] = new
          active = active + 1
          code = 1 -- started
        else
          code = 3 -- limit_exceeded
        end
      elseif kind == 'heartbeat' then
        if lease then
          lease.e = now + ttl
          code = 4 -- renewed
        else
          code = 5 -- no_lease
        end
      else
        if lease then
          leases[sid] = nil
          active = active - 1
          code = 6 -- stopped
        else
          code = 7 -- not_active
        end
      end
      local held = leases[sid]
      result = {code, active, max_streams, held and held.e or 0, now}
      if evicted then result[6] = evicted end
      if event_id ~= '' then
        r[#r + 1] = {o = offset, i = event_id, v = result}
      else
        r[#r + 1] = {o = offset, v = result}
      end
    end
    out[i] = result
    dirty[key] = true
  end
end

-- Keep the results Kafka may still redeliver (offset >= committed) and the most recent
-- eventIds; drop the rest so a user's state stays small.
for key in pairs(dirty) do
  local s = states[key]
  local r = s.r
  local kept = {}
  local ids = 0
  for j = #r, 1, -1 do
    local e = r[j]
    local keep_id = false
    if e.i then
      ids = ids + 1
      keep_id = ids <= memory
      if not keep_id then e.i = nil end
    end
    if keep_id or e.o >= committed then kept[#kept + 1] = e end
  end
  local m = #kept
  for j = 1, math.floor(m / 2) do kept[j], kept[m - j + 1] = kept[m - j + 1], kept[j] end
  s.r = kept
  redis.call('SET', key, cjson.encode(s), 'PX', idle_ttl)
end

if last > applied then redis.call('HSET', part, 'applied', last) end
return cjson.encode(out)
