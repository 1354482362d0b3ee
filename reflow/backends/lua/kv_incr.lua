-- Add to the integer stored at a key (absent or expired: 0).
--
-- KEYS: the key's hash, the index, the expiring set, the dead set, the floor.
-- ARGV: key name, amount, expiry or '' (used only when the counter is
-- created; a live counter keeps its own), now, hash prefix.
-- Returns the new total; an error if the stored value is not an integer.
local hash, index, expiring, dead, floor = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local name, by, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])

local live, ver, value, old_exp = state(hash, now, floor)
local base, exp = 0, optional(ARGV[3])
if live then
  -- Only what incr itself writes counts as an integer: optional minus, digits.
  base = string.find(value, '^%-?%d+$') and tonumber(value) or nil
  if base == nil then
    return redis.error_reply('NOTINTEGER the value is not an integer')
  end
  exp = old_exp or nil
end
local total = base + by
store(hash, name, string.format('%d', total), ver + 1, exp, index, expiring, value, old_exp)
reap(index, expiring, dead, floor, ARGV[5], now)
return total
