-- Apply several writes all-or-nothing: every expectation is checked against
-- the state before any write, and only if all hold is anything written.
--
-- KEYS: the index, the expiring set, the dead set, the floor, then one hash
-- per operation.
-- ARGV: now, hash prefix, then five per operation: kind (P put, D delete,
-- C check), key name, value, expected version or '', expiry or ''.
-- Returns {1, results} (per operation: new version, 0, checked version) or
-- {0, position of the failed operation (1-based), actual version}.
local index, expiring, dead, floor = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, hash_prefix = tonumber(ARGV[1]), ARGV[2]
local count = #KEYS - 4

local function arg(i, field) return ARGV[2 + (i - 1) * 5 + field] end

for i = 1, count do
  local expect = optional(arg(i, 4))
  if expect then
    local live, ver = state(KEYS[i + 4], now, floor)
    local actual = live and ver or 0
    if tonumber(expect) ~= actual then return {0, i, actual} end
  end
end

local results = {}
for i = 1, count do
  local kind, hash, name = arg(i, 1), KEYS[i + 4], arg(i, 2)
  if kind == 'P' then
    local _, ver, old_value, old_exp = state(hash, now, floor)
    store(hash, name, arg(i, 3), ver + 1, optional(arg(i, 5)), index, expiring, old_value, old_exp)
    results[i] = ver + 1
  elseif kind == 'D' then
    local _, _, value = state(hash, now, floor)
    if value then clear(hash, name, index, expiring, dead, now) end
    results[i] = 0
  else
    results[i] = tonumber(arg(i, 4))
  end
end
reap(index, expiring, dead, floor, hash_prefix, now)
return {1, results}
