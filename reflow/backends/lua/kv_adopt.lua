-- List in the dead set the tombstones an older reflow left behind (hashes
-- with a version and no value, from before the dead set existed), as dying
-- now, so that the collector drops them after its grace period.
--
-- KEYS: the dead set.
-- ARGV: now, hash prefix, then hash names (found by SCAN).
-- Returns how many were listed.
local dead, now, hash_prefix = KEYS[1], ARGV[1], ARGV[2]
local adopted = 0
for i = 3, #ARGV do
  local hash = ARGV[i]
  local name = string.sub(hash, #hash_prefix + 1)
  if redis.call('HEXISTS', hash, 'ver') == 1 and redis.call('HEXISTS', hash, 'v') == 0
      and redis.call('ZSCORE', dead, name) == false then
    redis.call('ZADD', dead, now, name)
    adopted = adopted + 1
  end
end
return adopted
