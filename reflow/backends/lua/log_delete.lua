-- Remove a stream together with the lease records of every group it has.
--
-- KEYS[1] the stream. ARGV[1] and ARGV[2]: the common prefixes of its groups'
-- lease deadlines and delivery times (the group name completes each key).
-- Returns 1 if the stream existed, else 0.
local stream, lease_prefix, delivered_prefix = KEYS[1], ARGV[1], ARGV[2]
local groups = redis.pcall('XINFO', 'GROUPS', stream)
if type(groups) == 'table' and not groups.err then
  for _, group in ipairs(groups) do
    for i = 1, #group, 2 do
      if group[i] == 'name' then
        redis.call('DEL', lease_prefix .. group[i + 1], delivered_prefix .. group[i + 1])
      end
    end
  end
end
return redis.call('DEL', stream)
