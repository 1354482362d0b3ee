-- Deliver up to `count` entries of a stream to one consumer of a group.
--
-- KEYS[1] the stream, KEYS[2] the group's lease deadlines (a sorted set:
-- entry id scored by when its lease ends), KEYS[3] the group's delivery
-- times (a hash: entry id -> when it was last delivered).
-- ARGV: group, consumer, count, lease (seconds), now (seconds since the epoch).
--
-- Entries whose lease ended are claimed first, oldest first (XCLAIM raises their delivery
-- count, so a first redelivery reports 2, exactly as XPENDING shows it),
-- then new entries are read (XREADGROUP). Time is the caller's injected
-- clock, passed in as `now`, like every other timer in reflow. Doing all of
-- it in one script means an entry is never delivered without its lease
-- being recorded.
--
-- Returns {claimed, fresh, last_id, next_deadline}: claimed and fresh are
-- flat lists (id, data, deliveries, ...); last_id is the stream's newest id
-- and next_deadline the earliest lease end ('' if none), both for a caller
-- that blocks when nothing was ready.
local stream, leases, delivered = KEYS[1], KEYS[2], KEYS[3]
local group, consumer = ARGV[1], ARGV[2]
local count, lease, now = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])

-- Lease records are written in bulk (one ZADD and one HSET per chunk of
-- entries, not two calls per entry): reads of many entries stay cheap.
local held = {}
local function hold(id)
  table.insert(held, id)
end
local function record_leases()
  for first = 1, #held, 500 do
    local deadlines, times = {}, {}
    for i = first, math.min(first + 499, #held) do
      table.insert(deadlines, now + lease)
      table.insert(deadlines, held[i])
      table.insert(times, held[i])
      table.insert(times, now)
    end
    redis.call('ZADD', leases, unpack(deadlines))
    redis.call('HSET', delivered, unpack(times))
  end
end

local function payload(fields)
  -- Entries carry one field, "d"; tolerate entries written by other tools.
  for i = 1, #fields, 2 do
    if fields[i] == 'd' then return fields[i + 1] end
  end
  return fields[2] or ''
end

-- Entry ids compare as numbers: milliseconds, then sequence.
local function id_less(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  a_ms, b_ms = tonumber(a_ms), tonumber(b_ms)
  if a_ms ~= b_ms then return a_ms < b_ms end
  return tonumber(a_seq) < tonumber(b_seq)
end

-- Expired entries go out oldest entry first, as on the other engines: of
-- (at most 1,000) expired leases, the lowest ids. They are claimed a chunk
-- at a time, because an entry trimmed away while pending is not claimed
-- (XCLAIM drops it from the PEL, and we drop its lease) and must not use up
-- the `count` of a read that has live entries behind it.
local claimed, taken = {}, 0
local due = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, math.max(count, 1000))
table.sort(due, id_less)
local next_due = 1
while taken < count and next_due <= #due do
  local chunk = {}
  for i = next_due, math.min(#due, next_due + count - taken - 1) do
    table.insert(chunk, due[i])
  end
  next_due = next_due + #chunk
  local got = redis.pcall('XCLAIM', stream, group, consumer, 0, unpack(chunk))
  if type(got) ~= 'table' or got.err then got = {} end
  local seen = {}
  for _, entry in ipairs(got) do
    local id = entry[1]
    seen[id] = true
    local info = redis.call('XPENDING', stream, group, id, id, 1)
    hold(id)
    taken = taken + 1
    table.insert(claimed, id)
    table.insert(claimed, payload(entry[2]))
    table.insert(claimed, info[1][4])
  end
  -- Trimmed or acknowledged behind our back: XCLAIM dropped them; so do we.
  for _, id in ipairs(chunk) do
    if not seen[id] then
      redis.call('ZREM', leases, id)
      redis.call('HDEL', delivered, id)
    end
  end
end

local fresh = {}
local wanted = count - taken
if wanted > 0 then
  local args = {'XREADGROUP', 'GROUP', group, consumer, 'COUNT', wanted, 'STREAMS', stream, '>'}
  local got = redis.pcall(unpack(args))
  if type(got) == 'table' and got.err then
    if not string.find(got.err, 'NOGROUP', 1, true) then return redis.error_reply(got.err) end
    -- The protocol creates a missing group from the start of the stream.
    redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
    got = redis.call(unpack(args))
  end
  if got and got[1] then
    for _, entry in ipairs(got[1][2]) do
      hold(entry[1])
      table.insert(fresh, entry[1])
      table.insert(fresh, payload(entry[2]))
      table.insert(fresh, 1)
    end
  end
end

record_leases()

local last_id, next_deadline = '0-0', ''
if #claimed == 0 and #fresh == 0 then
  local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if newest[1] then last_id = newest[1][1] end
  local first = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')
  if first[2] then next_deadline = first[2] end
end
return {claimed, fresh, last_id, next_deadline}
