-- Drop tombstones (and values expired unread) dead since before a cut-off,
-- and raise the floor to the highest version dropped, in one atomic step:
-- a key re-created afterwards starts above every version it had.
--
-- KEYS: the index, the expiring set, the dead set, the floor.
-- ARGV: cut-off (seconds on the caller's clock), most keys to look at, hash
-- prefix, now.
-- Returns {keys dropped, keys looked at}.
local index, expiring, dead, floor = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local cutoff, limit, hash_prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now = tonumber(ARGV[4])

local top, dropped, looked = 0, 0, 0

local function drop(hash, name)
  local ver = tonumber(redis.call('HGET', hash, 'ver')) or 0
  if ver > top then top = ver end
  redis.call('DEL', hash)
  redis.call('ZREM', index, name)
  redis.call('ZREM', expiring, name)
  redis.call('ZREM', dead, name)
  dropped = dropped + 1
end

-- Values whose TTL passed before the cut-off and that nobody reaped yet.
for _, name in ipairs(redis.call('ZRANGEBYSCORE', expiring, '-inf', cutoff, 'LIMIT', 0, limit)) do
  looked = looked + 1
  local hash = hash_prefix .. name
  -- (Live only if another process's clock runs behind the caller's: leave it.)
  if not state(hash, now, floor) then drop(hash, name) end
end

if looked < limit then
  local due = redis.call('ZRANGEBYSCORE', dead, '-inf', cutoff, 'LIMIT', 0, limit - looked)
  for _, name in ipairs(due) do
    local hash = hash_prefix .. name
    if redis.call('HEXISTS', hash, 'v') == 1 then
      redis.call('ZREM', dead, name)  -- written again since it died: no tombstone
    else
      drop(hash, name)
    end
    looked = looked + 1
  end
end

if top > (tonumber(redis.call('GET', floor)) or 0) then
  redis.call('SET', floor, top)
end
return {dropped, looked}
