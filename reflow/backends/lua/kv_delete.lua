-- Delete a key, optionally only at an expected version (0: the key is absent).
--
-- KEYS: the key's hash, the index, the expiring set, the dead set, the floor.
-- ARGV: key name, expected version or '', now.
-- Returns {1, existed (1/0)} or {0, actual version} when the expectation fails.
local hash, index, expiring, dead, floor = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local name, expect, now = ARGV[1], optional(ARGV[2]), tonumber(ARGV[3])

local live, ver, value = state(hash, now, floor)
local actual = live and ver or 0
if expect and tonumber(expect) ~= actual then return {0, actual} end
if value then clear(hash, name, index, expiring, dead, now) end
return {1, live and 1 or 0}
