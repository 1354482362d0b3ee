-- Shared by every KV script: Python prepends this file to each when loading it.
--
-- A key lives in a hash with three fields: v (the value), ver (its version)
-- and exp (when it expires, seconds since the epoch on the caller's clock;
-- absent when it never does). A delete or an expiry removes v and exp but
-- keeps ver (a tombstone), so a re-created key carries on from its old
-- version and never hands out one a reader may still hold. Three sorted sets
-- sit beside the hashes: the index (every live key, scored 0, so ZRANGEBYLEX
-- walks keys in byte order for scans), the expiring set (keys with a TTL,
-- scored by their expiry, so writes can reap a few expired keys each) and
-- the dead set (tombstones, scored by when they died, for the collector in
-- kv_collect.lua; an entry whose key lives again is dropped when met there).
-- Beside them, the floor: a string holding the highest version the collector
-- ever dropped; a key with no hash at all starts above it.

local function state(hash, now, floor)
  local f = redis.call('HMGET', hash, 'v', 'ver', 'exp')
  local ver = tonumber(f[2])
  if ver == nil then
    -- No hash (never written, or its tombstone collected): above the floor.
    ver = tonumber(redis.call('GET', floor)) or 0
  end
  local live = f[1] ~= false and (f[3] == false or tonumber(f[3]) > now)
  return live, ver, f[1], f[3]
end

-- Turn a key into a tombstone that died at `since`.
local function clear(hash, name, index, expiring, dead, since)
  redis.call('HDEL', hash, 'v', 'exp')
  redis.call('ZREM', index, name)
  redis.call('ZREM', expiring, name)
  redis.call('ZADD', dead, since, name)
end

-- Write a new value; `old_value` and `old_exp` are what state() found, so
-- that only the index and expiry entries that change are touched.
local function store(hash, name, value, ver, exp, index, expiring, old_value, old_exp)
  if exp then
    redis.call('HSET', hash, 'v', value, 'ver', ver, 'exp', exp)
    redis.call('ZADD', expiring, exp, name)
  else
    redis.call('HSET', hash, 'v', value, 'ver', ver)
    if old_exp then
      redis.call('HDEL', hash, 'exp')
      redis.call('ZREM', expiring, name)
    end
  end
  -- The index holds exactly the keys whose hash has a value.
  if not old_value then redis.call('ZADD', index, 0, name) end
end

-- Free the values of a few keys whose TTL has passed, so that keys nobody
-- reads again do not hold memory forever. The hash of each is named from the
-- namespace's prefix, which is why this needs a standalone (non-cluster) server.
local function reap(index, expiring, dead, floor, hash_prefix, now)
  local due = redis.call('ZRANGEBYSCORE', expiring, '-inf', now, 'LIMIT', 0, 8)
  for _, name in ipairs(due) do
    local hash = hash_prefix .. name
    local live, _, _, exp = state(hash, now, floor)
    if not live then clear(hash, name, index, expiring, dead, tonumber(exp) or now) end
  end
end

local function optional(text)
  if text == '' then return nil end
  return text
end
