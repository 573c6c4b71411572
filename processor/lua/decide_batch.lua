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
-- ARGV[9]     the events, JSON: [[offset, type, sessionId, record timestamp ms,
--             eventId ('' = none), deviceId ('' = none), contentId ('' = none)], ...]
--
-- Returns 'FENCED:<epoch>' when a newer owner took the partition (nothing is written),
-- else a JSON array with one result per event:
--   [code, activeStreams, maxStreams, leaseExpiresAt (0 = none), now, [evicted sessionIds]?]
-- or [0] for an offset applied earlier whose result is no longer stored.
--
-- A user's state is one MessagePack value (cmsgpack: about twice as fast as cjson here),
-- kept small because it is read and written per event:
--   {c = clock, q = lease sequence, l = {sessionId = {e = expiry, q = seq, d = device, t = content}},
--    r = {'<offset>|<result>', ...}         results Kafka may redeliver (offset >= committed)
--    i = {'<len>:<eventId><result>', ...}}  results of the most recent eventIds, oldest first

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
local events = cjson.decode(ARGV[9])

local find, sub, format = string.find, string.sub, string.format
local states = {}   -- user key -> decoded state, shared by the batch's events of that user
local dirty = {}

local function stored_by_offset(r, offset)
  local prefix = offset .. '|'
  for j = #r, 1, -1 do
    if find(r[j], prefix, 1, true) == 1 then return sub(r[j], #prefix + 1) end
  end
  return nil
end

local function stored_by_event_id(ids, prefix)
  for j = #ids, 1, -1 do
    if find(ids[j], prefix, 1, true) == 1 then return sub(ids[j], #prefix + 1) end
  end
  return nil
end

local out = {}
for n, ev in ipairs(events) do
  local offset = ev[1]
  local key = KEYS[1 + n]
  local s = states[key]
  if s == nil then
    local raw = redis.call('GET', key)
    if raw then
      s = cmsgpack.unpack(raw)
    else
      s = {c = 0, q = 0, l = {}, r = {}, i = {}}
    end
    states[key] = s
  end

  if offset <= applied then
    -- A replay: answer with what was decided the first time, change nothing. Results
    -- below the committed offset are trimmed; a rewound group still finds recent eventIds.
    local result = stored_by_offset(s.r, format('%d', offset))
    if result == nil and ev[5] ~= '' then result = stored_by_event_id(s.i, #ev[5] .. ':' .. ev[5]) end
    out[n] = result or '[0]'
  else
    local event_id = ev[5]
    local id_prefix = nil
    local result = nil
    if event_id ~= '' then
      id_prefix = #event_id .. ':' .. event_id
      result = stored_by_event_id(s.i, id_prefix)
    end
    if result == nil then
      local now = ev[4]
      if now < s.c then now = s.c end
      s.c = now
      local leases = s.l
      local active = 0
      for sid, lease in pairs(leases) do
        if lease.e <= now then leases[sid] = nil else active = active + 1 end
      end
      local kind = ev[2]
      local sid = ev[3]
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
          if ev[6] ~= '' then new.d = ev[6] end
          if ev[7] ~= '' then new.t = ev[7] end
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
      local expires = held and held.e or 0
      if evicted then
        result = cjson.encode({code, active, max_streams, expires, now, evicted})
      else
        result = format('[%d,%d,%d,%d,%d]', code, active, max_streams, expires, now)
      end
      if id_prefix then
        local ids = s.i
        ids[#ids + 1] = id_prefix .. result
        if #ids > memory then table.remove(ids, 1) end
      end
    end
    -- (an upstream duplicate at a new offset is answered with the first verdict again)
    local r = s.r
    r[#r + 1] = format('%d', offset) .. '|' .. result
    out[n] = result
    dirty[key] = true
  end
end

-- Keep only the results Kafka may still redeliver (offset >= committed).
for key in pairs(dirty) do
  local s = states[key]
  local kept = {}
  for _, entry in ipairs(s.r) do
    if tonumber(sub(entry, 1, find(entry, '|', 1, true) - 1)) >= committed then kept[#kept + 1] = entry end
  end
  s.r = kept
  redis.call('SET', key, cmsgpack.pack(s), 'PX', idle_ttl)
end

if last > applied then redis.call('HSET', part, 'applied', last) end
return '[' .. table.concat(out, ',') .. ']'
