-- Decide a batch of events of one Kafka partition, atomically: the contract's lease
-- rules, the per-user event clock, pruning of expired leases, and effectively-once
-- bookkeeping (applied offset, stored results, recent eventIds), in one call.
--
-- KEYS[1]     partition hash  sc:{<events topic>:<partition>}:p   fields: epoch, applied,
--             st (stream time), nx (a lower bound of the earliest index entry; absent: none),
--             'c:<deviceClass>' (active leases of that class; 'c:' = no class)
-- KEYS[1+i]   state of the user of event i  sc:{<events topic>:<partition>}:u:<userId>
-- then        the user keys of index entries that may come due in the batch (the caller reads
--             the index's first due entries before the call): a due entry whose user key is not
--             among KEYS stops the call before its record, as the ARGV[12] bound does (MORE)
-- KEYS[#KEYS] the partition's expiry index  sc:{<events topic>:<partition>}:x, a sorted set:
--             member = userId (each NUL as NUL 0x01) .. NUL NUL .. sessionId, so member order is
--             (userId, sessionId) code-point order; score = the lease's expiry when indexed
--             (never later than its expiry)
-- ARGV[1]     epoch taken by the caller when it was assigned the partition
-- ARGV[2]     max streams          ARGV[3] lease TTL ms      ARGV[4] 'reject' | 'evict_oldest'
-- ARGV[5]     committed offset: results of offsets below it are no longer needed (-1: none)
-- ARGV[6]     last offset of the batch, dead-lettered records included (becomes `applied`)
-- ARGV[7]     idle user key TTL ms ARGV[8] eventIds remembered per user
-- ARGV[9]     the events, JSON, offsets ascending: [[offset, type, sessionId, record
--             timestamp ms, eventId ('' = none), deviceId (null = none), contentId (null = none),
--             targetSessionId ('' = none), deviceClass ('' = none), policy number], ...]
-- ARGV[10]    the batch's policies, JSON: [[kind, maxStreams, evict (0|1), {class = cap}], ...]
--             (kind 'u' user, 'p:<plan>' plan, 'd' default or settings); an event's policy number is
--             its position here. Absent: every event gets the settings (ARGV[2], ARGV[4]).
--
-- ARGV[11]    the highest offset this owner already had applied (-1: none yet)
-- ARGV[12]    the most index entries one call may look at (absent or 0: no bound). A record
--             whose stream time has more due stops the call before it is decided (see MORE).
--
-- Returns 'FENCED:<epoch>' when a newer owner took the partition (nothing is written),
-- 'BEHIND:<applied>' when the applied offset is below ARGV[11] (state lost; nothing written),
-- 'MORE:' .. the JSON array below for the events before the record that ran out of the ARGV[12]
-- bound: the caller calls again with the rest. The expiries already done for that record wait in
-- the partition hash (field pe) and lead its result when it is decided; `applied` stops below it.
-- else a JSON array: first {deviceClass = active leases} of the partition after the batch
-- ('' = no class), then nx (-1: the index is empty), then one result per event:
--   [code, activeStreams, maxStreams, leaseExpiresAt (0 = none), now]  (kind 'd', nothing revoked)
--   [code, activeStreams, maxStreams, leaseExpiresAt, now, [revoked sessionIds], kind, conflicts?]
--   where conflicts (limit_exceeded, device_class_limit) is the deny advice:
--   [[sessionId, deviceId, deviceClass, contentId, startedAt, leaseExpiresAt], ...] oldest first;
-- or [0] for an offset applied earlier whose result is no longer stored (or not certain),
-- or [8] (rules.EVENT_ID_CONFLICT, not a verdict: dead-letter it as `event_id_conflict`)
-- for an event whose eventId the user remembers for another event, i.e. another
-- (type, sessionId, targetSessionId). A conflict changes nothing but its offset's result.
-- A stored result is returned as stored: a redelivery gets the same policy and advice.
-- An event whose record moved stream time past leases' expiries gets [expired, result]
-- instead, expired = [[userId, sessionId, expiry, activeStreams, deviceClass|null, stream
-- time], ...] in expiry order (then userId, sessionId): the session ledger's `expire`
-- verdicts, published before the event's own. Stored with the offset's result (not with the
-- eventId: a duplicate at a new offset pushes its own expiries).
--
-- A user's state is one MessagePack value (cmsgpack: about twice as fast as cjson here),
-- kept small because it is read and written per event:
--   {c = clock, q = lease sequence,
--    l = {sessionId = {e = expiry, q = seq, s = startedAt, d = device, t = content, k = class}},
--    r = {'<offset>|<result>', ...}  results Kafka may redeliver (offset >= committed), ascending
--    i = {'<n>:<eventId><k><tag><result>', ...}  the most recent eventIds, oldest first ('<n>:'
--        = length in bytes), each with the event it names: its type (tag, one letter, see TAG)
--        and its session (f[k]), and its result. Entries written before events were named
--        this way are '<n>:<eventId><result>'.
--    x = the last two bytes of each entry's eventId, in the order of i: entries that can
--        hold an eventId are found with one search of x instead of a search of every entry
--    f = {sessionId, ...}}  the sessions of those events, each once (a user's eventIds mostly
--        name events of the same few sessions); '<n>:<targetSessionId><sessionId>' for an
--        event with a targetSessionId

local part = KEYS[1]
local current = redis.call('HGET', part, 'epoch')
if current ~= ARGV[1] then
  return 'FENCED:' .. tostring(current)
end
local head = redis.call('HGETALL', part)
local fields = {}
for j = 1, #head, 2 do fields[head[j]] = head[j + 1] end
local applied = tonumber(fields.applied or '-1')
-- The caller has had offsets up to ARGV[11] applied under its epoch: an applied offset below
-- that means Redis lost acknowledged writes (a failover to a replica that had not got them).
if applied < tonumber(ARGV[11] or '-1') then
  return 'BEHIND:' .. applied
end
local max_streams = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local evict = ARGV[4] == 'evict_oldest'
local committed = tonumber(ARGV[5])
local last = tonumber(ARGV[6])
local idle_ttl = ARGV[7]
local memory = tonumber(ARGV[8])
local events = cjson.decode(ARGV[9])
-- The batch's policies, [[kind ('u'|'p'|'d'), max streams, evict (0|1), {class = cap}], ...];
-- an event names its own by position. Without them: the settings.
local policies = ARGV[10] and cjson.decode(ARGV[10]) or {}
local SETTINGS_POLICY = {'d', max_streams, evict and 1 or 0, {}}

local find, sub, byte, format = string.find, string.sub, string.byte, string.format
local NULL = cjson.null
local CONFLICT = '[8]'
local SCAN = 32      -- session lists up to this long are scanned; longer ones get an index
local SLACK = 8      -- sessions no entry names any more, kept until there are this many
local GROWTH = 64    -- eventIds beyond the memory appended before i is cut to size mid-batch
local states = {}    -- user key -> decoded state, shared by the batch's events of that user
local dirty = {}
local by_offset = {} -- user key -> {offset = result}, built at the user's first replayed event
local index = KEYS[#KEYS]
local user_prefix = sub(part, 1, -2) .. 'u:' -- part is '<tag>:p'
local stream_time = tonumber(fields.st or '0')
local next_due = fields.nx and tonumber(fields.nx) -- nil: the index is empty
local head_dirty = false
local budget = tonumber(ARGV[12] or '0') -- index entries this call may still look at
if budget <= 0 then budget = nil end
local pending = fields.pe -- expiries done for a record a bounded call stopped before (joined JSON)
local pending_dirty = false
local more = false       -- expire_due ran out of budget with entries still due
local declared = {}      -- the user keys this call may read or write
for j = 2, #KEYS - 1 do declared[KEYS[j]] = true end
-- Active leases per device class ('' = none), as the ledger counts them: from start until
-- stop, eviction, terminate or expiry by stream time.
local counts, counts_dirty = {}, {}
for name, value in pairs(fields) do
  if sub(name, 1, 2) == 'c:' then counts[sub(name, 3)] = tonumber(value) end
end
local f_index = {}   -- user key -> {session = k}, built for long lists only
local digits = {}    -- k -> its decimal text (a number in a concatenation is formatted each time)

-- The event type in an eventId entry; upper case when the event has a targetSessionId.
local TAG = {start = 's', heartbeat = 'h', stop = 'x', terminate = 't'}

-- What an eventId names, as (tag, session): its type and its sessionId (and targetSessionId).
-- Built from strings the event already has, so a new eventId costs no new string here.
local function identity(ev)
  local tag, target = TAG[ev[2]], ev[8]
  if tag == nil then error('decide_batch.lua: no TAG for event type ' .. tostring(ev[2])) end
  if target == nil or target == '' then return tag, ev[3] end
  return string.upper(tag), #target .. ':' .. target .. ev[3]
end

-- Drop the first `drop` elements of an array, in place.
local function drop_first(list, drop)
  local n = #list
  for j = 1, n - drop do list[j] = list[j + drop] end
  for j = n - drop + 1, n do list[j] = nil end
end

-- The two bytes of an eventId kept in x.
local function id_key(event_id)
  if #event_id == 1 then return ' ' .. event_id end
  return sub(event_id, -2)
end

-- x for the entries of i (a state written without it).
local function keys_of(ids)
  local keys = {}
  for j, entry in ipairs(ids) do
    local colon = find(entry, ':', 1, true)
    keys[j] = id_key(sub(entry, colon + 1, colon + tonumber(sub(entry, 1, colon - 1))))
  end
  return table.concat(keys)
end

-- The entry of an eventId among the user's `memory` most recent ones (entries before
-- them are forgotten: a lowered memory takes effect at once), or nil.
local function remembered(s, id_prefix, key2)
  local ids, keys = s.i, s.x
  local n = #ids
  if keys == nil or #keys ~= 2 * n then
    keys = keys_of(ids)
    s.x = keys
  end
  local low = n - memory -- positions <= low are forgotten
  local found = nil
  local p = find(keys, key2, 1, true)
  while p do
    if p % 2 == 1 then -- aligned: entry (p + 1) / 2 may hold it; the latest one wins
      local j = (p + 1) / 2
      if j > low and find(ids[j], id_prefix, 1, true) == 1 then found = ids[j] end
    end
    p = find(keys, key2, p + 1, true)
  end
  return found
end

-- Keep the last `memory` entries of i (and their keys in x).
local function cut_memory(s)
  local ids, keys = s.i, s.x
  local drop = #ids - memory
  if drop > 0 then
    if keys == nil or #keys ~= 2 * #ids then keys = keys_of(ids) end
    drop_first(ids, drop)
    s.x = sub(keys, 2 * drop + 1)
  end
end

-- (tag, session, result) of an entry, `at` just after its eventId; tag and session are nil
-- in an entry written before events were named.
local function named(s, entry, at)
  if byte(entry, at) == 91 then return nil, nil, sub(entry, at) end -- '['
  local t = find(entry, '%a', at) -- the tag: the first letter after k's digits
  return sub(entry, t, t), s.f[tonumber(sub(entry, at, t - 1))], sub(entry, t + 1)
end

-- The number of a session in the user's list f, added when new.
local function session_number(key, s, session)
  local sessions = s.f
  if sessions == nil then
    sessions = {}
    s.f = sessions
  end
  local n = #sessions
  if n <= SCAN then
    for k = n, 1, -1 do
      if sessions[k] == session then return k end
    end
  else
    local index = f_index[key]
    if index == nil then
      index = {}
      for k = 1, n do index[sessions[k]] = k end
      f_index[key] = index
    end
    local k = index[session]
    if k then return k end
    index[session] = n + 1
  end
  sessions[n + 1] = session
  return n + 1
end

-- The userId of a user key (the events carry no userId into the script).
local user_key_offset = #user_prefix + 1
local function user_of(key)
  return sub(key, user_key_offset)
end

-- The index member of a lease: order-preserving and unambiguous for ids holding any byte.
local function member_of(key, sid)
  local user_id = user_of(key)
  if find(user_id, '\0', 1, true) then user_id = string.gsub(user_id, '%z', '\0\1') end
  return user_id .. '\0\0' .. sid
end

local function count(class, delta)
  class = class or ''
  counts[class] = (counts[class] or 0) + delta
  counts_dirty[class] = true
end

-- The index as this batch sees it. Redis's sorted set is written only at the end (one ZADD,
-- one ZREM), so it is read in rank order a chunk at a time; `pend` overlays it: member -> new
-- score, or false when removed. A Redis entry is live while pend has not its member; an entry
-- indexed in this batch that can come due before the batch ends (score <= horizon) waits in
-- the heap `near` (live while pend holds its score); later ones only lower `far`.
local pend, near, far = {}, {}, nil
local read_m, read_s, read_at, read_rank, read_more, chunk = {}, {}, 1, 0, true, 16
local horizon = stream_time -- the highest stream time this batch can reach
for _, ev in ipairs(events) do
  if ev[1] > applied and ev[4] > horizon then horizon = ev[4] end
end

-- A lease ended by a verdict (stop, eviction, terminate): out of the index and the counts.
local function unindex(key, sid, lease)
  pend[member_of(key, sid)] = false
  count(lease.k, -1)
end

-- The active lease of `class` (any class when nil) started first, removed; its sessionId.
local function remove_oldest(key, leases, class)
  local oldest, oldest_q = nil, nil
  for osid, olease in pairs(leases) do
    if (class == nil or olease.k == class) and (oldest_q == nil or olease.q < oldest_q) then
      oldest, oldest_q = osid, olease.q
    end
  end
  unindex(key, oldest, leases[oldest])
  leases[oldest] = nil
  return oldest
end

local function json_or_null(value)
  if value == nil then return 'null' end
  return cjson.encode(value)
end

-- Deny advice: the active leases (of `class`, or all), oldest start first, as JSON
-- [[sessionId, deviceId, deviceClass, contentId, startedAt, leaseExpiresAt], ...].
local function conflicts_of(leases, class)
  local list = {}
  for osid, olease in pairs(leases) do
    if class == nil or olease.k == class then list[#list + 1] = {osid, olease} end
  end
  table.sort(list, function(a, b) return a[2].q < b[2].q end)
  local parts = {}
  for j, item in ipairs(list) do
    local l = item[2]
    parts[j] = '[' .. cjson.encode(item[1]) .. ',' .. json_or_null(l.d) .. ',' .. json_or_null(l.k) .. ','
      .. json_or_null(l.t) .. ',' .. (l.s and format('%d', l.s) or 'null') .. ',' .. format('%d', l.e) .. ']'
  end
  return '[' .. table.concat(parts, ',') .. ']'
end

-- (score, member) order as Redis keeps it: members by bytes (Lua's < follows the locale).
local function earlier(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  local m1, m2 = a[2], b[2]
  for j = 1, math.min(#m1, #m2) do
    local x, y = byte(m1, j), byte(m2, j)
    if x ~= y then return x < y end
  end
  return #m1 < #m2
end

-- The binary heap near: push, and drop its top.
local function push(item)
  local j = #near + 1
  near[j] = item
  while j > 1 do
    local up = (j - j % 2) / 2
    if not earlier(item, near[up]) then break end
    near[j], near[up] = near[up], item
    j = up
  end
end
local function pop()
  local n = #near
  local item = near[n]
  near[n] = nil
  n = n - 1
  if n == 0 then return end
  local j = 1
  while true do
    local c = 2 * j
    if c > n then break end
    if c < n and earlier(near[c + 1], near[c]) then c = c + 1 end
    if not earlier(near[c], item) then break end
    near[j] = near[c]
    j = c
  end
  near[j] = item
end

local function index_lease(member, expiry)
  if pend[member] ~= expiry then
    pend[member] = expiry
    if expiry <= horizon then push({expiry, member}) elseif far == nil or expiry < far then far = expiry end
  end
  if next_due == nil or expiry < next_due then
    next_due = expiry
    head_dirty = true
  end
end

-- The earliest live entry of the index, {score, member}, or nil: Redis's, read on a chunk at a
-- time (each one larger), or near's. Dead entries passed over stay dead: pend only grows.
local function earliest()
  while true do
    local m = read_m[read_at]
    if m == nil and read_more then
      local got = redis.call('ZRANGE', index, read_rank, read_rank + chunk - 1, 'WITHSCORES')
      read_rank, read_more, read_at = read_rank + chunk, #got == 2 * chunk, 1
      read_m, read_s = {}, {}
      for j = 2, #got, 2 do read_m[j / 2], read_s[j / 2] = got[j - 1], tonumber(got[j]) end
      if chunk < 512 then chunk = chunk * 2 end
    elseif m ~= nil and pend[m] ~= nil then
      read_at = read_at + 1
    else
      break
    end
  end
  while near[1] and pend[near[1][2]] ~= near[1][1] do pop() end
  local m, top = read_m[read_at], near[1]
  if m == nil then return top end
  local item = {read_s[read_at], m}
  if top and earlier(top, item) then return top end
  return item
end

-- A renewal keeps the lease's index entry (due at the old expiry, it is looked at then);
-- only an expiry moved earlier (a lowered TTL) is indexed again at once.
local function renew(key, sid, lease, expiry)
  if expiry < lease.e then index_lease(member_of(key, sid), expiry) end
  lease.e = expiry
end

-- A user's state from the batch's cache or Redis; nil when Redis holds none.
local function state_of(key)
  local s = states[key]
  if s == nil then
    local raw = redis.call('GET', key)
    if not raw then return nil end
    s = cmsgpack.unpack(raw)
    states[key] = s
  end
  return s
end

-- Expire every lease whose expiry stream time has reached, in (expiry, userId, sessionId)
-- order; returns their JSON entries joined, or nil. An entry comes due at the expiry its
-- lease had when indexed: a lease renewed since is indexed again at its current expiry (one
-- write per TTL window, not per heartbeat); an entry whose lease or user state is gone
-- (stopped, evicted, terminated, idle user dropped) is removed. next_due becomes the earliest
-- live entry's score, or `far` when lower (a lower bound: far's entries may have gone since).
local function expire_due()
  local list = nil
  head_dirty = true
  while true do
    local item = earliest()
    if item == nil or item[1] > stream_time then
      next_due = item and item[1]
      if far and (next_due == nil or far < next_due) then next_due = far end
      return list and table.concat(list, ',')
    end
    if budget ~= nil then
      if budget == 0 then -- the rest in the next call: this entry is the earliest due one
        more = true
        next_due = item[1]
        return list and table.concat(list, ',')
      end
      budget = budget - 1
    end
    local score, member = item[1], item[2]
    local sep = find(member, '\0\0', 1, true)
    local user_id, sid = sub(member, 1, sep - 1), sub(member, sep + 2)
    if find(user_id, '\0', 1, true) then user_id = string.gsub(user_id, '%z\1', '\0') end
    local key = user_prefix .. user_id
    if not declared[key] then -- the caller did not read this far: the rest in the next call
      more = true
      next_due = score
      return list and table.concat(list, ',')
    end
    local s = state_of(key)
    local lease = s and s.l[sid]
    if lease == nil then
      pend[member] = false
    elseif lease.e > score then
      index_lease(member, lease.e) -- due again later, maybe in this batch: near keeps its place
    else
      local e = lease.e
      s.l[sid] = nil
      if e > s.c then s.c = e end -- the user's clock moves up to the expiry
      local later = 0
      for _, l in pairs(s.l) do
        if l.e > e then later = later + 1 end
      end
      count(lease.k, -1)
      pend[member] = false
      dirty[key] = true
      list = list or {}
      list[#list + 1] = '[' .. cjson.encode(user_id) .. ',' .. cjson.encode(sid) .. ',' .. format('%d', e)
        .. ',' .. later .. ',' .. json_or_null(lease.k) .. ',' .. format('%d', stream_time) .. ']'
    end
  end
end

local out = {}
local stopped_at = nil -- the offset of the record a bounded call stopped before
for n, ev in ipairs(events) do
  local offset = ev[1]
  local offset_text = format('%d', offset)
  local key = KEYS[1 + n]
  local s = states[key]
  if s == nil then
    local raw = redis.call('GET', key)
    if raw then
      s = cmsgpack.unpack(raw)
    else
      s = {c = 0, q = 0, l = {}, r = {}, i = {}, x = ''}
    end
    states[key] = s
  end
  local event_id = ev[5]

  if offset <= applied then
    -- A replay: answer with what was decided the first time, change nothing. Results
    -- below the committed offset are trimmed; a rewound group still finds recent eventIds.
    local stored = by_offset[key]
    if stored == nil then
      stored = {}
      for _, entry in ipairs(s.r) do
        local bar = find(entry, '|', 1, true)
        stored[sub(entry, 1, bar - 1)] = sub(entry, bar + 1)
      end
      by_offset[key] = stored
    end
    local result = stored[offset_text]
    if result == nil and event_id ~= '' then
      local id_prefix = #event_id .. ':' .. event_id
      local entry = remembered(s, id_prefix, id_key(event_id))
      if entry then
        -- Only the same event's result: a conflict, or an event decided before its eventId
        -- was forgotten and reused, cannot be told apart any more.
        local named_tag, named_session, first = named(s, entry, #id_prefix + 1)
        if named_tag ~= nil then
          local tag, session = identity(ev)
          if named_tag == tag and named_session == session then result = first end
        end
      end
    end
    out[n] = result or '[0]'
  else
    -- Stream time moves with every record that reaches the script, before it is decided.
    local expired = nil
    if ev[4] > stream_time then
      stream_time = ev[4]
      head_dirty = true
    end
    if next_due ~= nil and stream_time >= next_due then expired = expire_due() end
    if pending then -- done by earlier calls for this record: they come first
      expired = expired and (pending .. ',' .. expired) or pending
      pending, pending_dirty = nil, true
    end
    if more then
      pending, pending_dirty, stopped_at = expired, true, offset
      break
    end
    local id_prefix, key2, tag, session = nil, nil, nil, nil
    local result = nil
    if event_id ~= '' then
      id_prefix = #event_id .. ':' .. event_id
      key2 = id_key(event_id)
      tag, session = identity(ev)
      local entry = remembered(s, id_prefix, key2)
      if entry then
        local named_tag, named_session, first = named(s, entry, #id_prefix + 1)
        if named_tag == nil or (named_tag == tag and named_session == session) then
          result = first -- an upstream duplicate (or an entry too old to tell: as before)
        else
          result = CONFLICT -- another event under this eventId: it keeps its entry
        end
      end
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
      local policy = policies[ev[10]] or SETTINGS_POLICY
      local limit, overflow_evicts, pkind = policy[2], policy[3] == 1, policy[1]
      local code
      local revoked = nil
      local conflicts = nil
      if kind == 'start' then
        if lease then
          renew(key, sid, lease, now + ttl)
          code = 2 -- already_active
        else
          local class = ev[9]
          local cap = nil
          if class ~= '' then cap = policy[4][class] end
          if cap then -- the class cap is checked before the total limit
            local in_class = 0
            for _, l in pairs(leases) do
              if l.k == class then in_class = in_class + 1 end
            end
            if in_class >= cap then
              if not overflow_evicts or cap == 0 then
                code = 10 -- device_class_limit
                conflicts = conflicts_of(leases, class)
              elseif limit > 0 then
                while in_class >= cap do
                  revoked = revoked or {}
                  revoked[#revoked + 1] = remove_oldest(key, leases, class)
                  in_class = in_class - 1
                  active = active - 1
                end
              end
            end
          end
          if code == nil and active >= limit then
            if not overflow_evicts or limit == 0 then
              code = 3 -- limit_exceeded
              conflicts = conflicts_of(leases, nil)
            else
              while active >= limit do
                revoked = revoked or {}
                revoked[#revoked + 1] = remove_oldest(key, leases, nil)
                active = active - 1
              end
            end
          end
          if code == nil then
            s.q = s.q + 1
            local new = {e = now + ttl, q = s.q, s = now}
            if ev[6] ~= NULL then new.d = ev[6] end -- '' is a deviceId too; null is none
            if ev[7] ~= NULL then new.t = ev[7] end
            if class ~= '' then new.k = class end
            leases[sid] = new
            index_lease(member_of(key, sid), new.e)
            count(new.k, 1)
            active = active + 1
            code = 1 -- started
          end
        end
      elseif kind == 'heartbeat' then
        if lease then
          renew(key, sid, lease, now + ttl)
          code = 4 -- renewed
        else
          code = 5 -- no_lease
        end
      elseif kind == 'terminate' then
        local target = ev[8]
        if leases[target] then
          unindex(key, target, leases[target])
          leases[target] = nil
          active = active - 1
          revoked = {target}
          code = 9 -- terminated
        else
          code = 7 -- not_active
        end
      else
        if lease then
          unindex(key, sid, lease)
          leases[sid] = nil
          active = active - 1
          code = 6 -- stopped
        else
          code = 7 -- not_active
        end
      end
      local held = kind ~= 'terminate' and leases[sid]
      local expires = held and held.e or 0
      if revoked == nil and conflicts == nil and pkind == 'd' then
        result = format('[%d,%d,%d,%d,%d]', code, active, limit, expires, now)
      else
        result = format('[%d,%d,%d,%d,%d,', code, active, limit, expires, now)
          .. (revoked and cjson.encode(revoked) or '[]') .. ',' .. cjson.encode(pkind)
          .. (conflicts and (',' .. conflicts) or '') .. ']'
      end
      if id_prefix then
        local k = session_number(key, s, session)
        local k_text = digits[k]
        if k_text == nil then
          k_text = format('%d', k)
          digits[k] = k_text
        end
        -- Appended: the memory is cut to size when the state is written (or grew a lot).
        local ids = s.i
        ids[#ids + 1] = id_prefix .. k_text .. tag .. result
        s.x = s.x .. key2
        if #ids > memory + GROWTH then cut_memory(s) end
      end
    end
    if expired then result = '[[' .. expired .. '],' .. result .. ']' end
    local r = s.r
    r[#r + 1] = offset_text .. '|' .. result
    local stored = by_offset[key]
    if stored then stored[offset_text] = result end
    out[n] = result
    dirty[key] = true
  end
end

-- Keep the sessions the entries name, renumbered in order of first use.
local function compact(s)
  local sessions, kept, ids = s.f, {}, s.i
  local renumber = {}
  for j = 1, #ids do
    local entry = ids[j]
    local colon = find(entry, ':', 1, true)
    local at = colon + 1 + tonumber(sub(entry, 1, colon - 1))
    if byte(entry, at) ~= 91 then
      local t = find(entry, '%a', at)
      local k = tonumber(sub(entry, at, t - 1))
      local new = renumber[k]
      if new == nil then
        new = #kept + 1
        kept[new] = sessions[k]
        renumber[k] = new
      end
      if new ~= k then ids[j] = sub(entry, 1, at - 1) .. new .. sub(entry, t) end
    end
  end
  s.f = kept
end

for key in pairs(dirty) do
  local s = states[key]
  -- Keep only the results Kafka may still redeliver (offset >= committed); r ascends.
  local r = s.r
  local first = #r + 1
  for j = 1, #r do
    local entry = r[j]
    if tonumber(sub(entry, 1, find(entry, '|', 1, true) - 1)) >= committed then
      first = j
      break
    end
  end
  if first > 1 then drop_first(r, first - 1) end
  -- Keep the `memory` most recent eventIds (also when the setting was lowered).
  if #s.i > memory then cut_memory(s) end
  if s.f and #s.f > #s.i + SLACK then compact(s) end
  -- A user holding leases never expires by idle time: the ledger must see each lease end in
  -- a verdict (an idle partition pushes its expiries when its next record comes).
  if next(s.l) == nil then
    redis.call('SET', key, cmsgpack.pack(s), 'PX', idle_ttl)
  else
    redis.call('SET', key, cmsgpack.pack(s))
  end
end

-- The index's writes of the batch: one ZADD, one ZREM (in chunks: unpack has a limit).
local adds, rems = {}, {}
for member, score in pairs(pend) do
  if score then
    adds[#adds + 1] = format('%d', score)
    adds[#adds + 1] = member
  else
    rems[#rems + 1] = member
  end
end
for j = 1, #adds, 1000 do redis.call('ZADD', index, unpack(adds, j, math.min(j + 999, #adds))) end
for j = 1, #rems, 1000 do redis.call('ZREM', index, unpack(rems, j, math.min(j + 999, #rems))) end

local head_fields = {}
if stopped_at then last = stopped_at - 1 end -- the rest of the batch is not applied yet
if last > applied then head_fields[#head_fields + 1] = 'applied'; head_fields[#head_fields + 1] = last end
if pending_dirty then
  if pending then
    head_fields[#head_fields + 1] = 'pe'
    head_fields[#head_fields + 1] = pending
  else
    redis.call('HDEL', part, 'pe')
  end
end
if head_dirty then
  head_fields[#head_fields + 1] = 'st'
  head_fields[#head_fields + 1] = format('%d', stream_time)
  if next_due == nil then
    redis.call('HDEL', part, 'nx')
  else
    head_fields[#head_fields + 1] = 'nx'
    head_fields[#head_fields + 1] = format('%d', next_due)
  end
end
for class in pairs(counts_dirty) do
  head_fields[#head_fields + 1] = 'c:' .. class
  head_fields[#head_fields + 1] = counts[class]
end
if #head_fields > 0 then redis.call('HSET', part, unpack(head_fields)) end
local reply = '[' .. cjson.encode(counts) .. ',' .. format('%d', next_due or -1)
  .. (#out > 0 and ',' or '') .. table.concat(out, ',') .. ']'
if stopped_at then return 'MORE:' .. reply end
return reply
