-- Store a value, optionally only at an expected version (0: the key is absent).
--
-- KEYS: the key's hash, the index, the expiring set, the dead set, the floor.
-- ARGV: key name, value, expected version or '', expiry or '', now, hash prefix.
-- Returns {1, new version} or {0, actual version} when the expectation fails.
local hash, index, expiring, dead, floor = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local name, value, expect, exp = ARGV[1], ARGV[2], optional(ARGV[3]), optional(ARGV[4])
local now = tonumber(ARGV[5])

local live, ver, old_value, old_exp = state(hash, now, floor)
local actual = live and ver or 0
if expect and tonumber(expect) ~= actual then return {0, actual} end
store(hash, name, value, ver + 1, exp, index, expiring, old_value, old_exp)
reap(index, expiring, dead, floor, ARGV[6], now)
return {1, ver + 1}
