-- Acknowledge entries of a group and drop their leases.
--
-- KEYS[1] the stream, KEYS[2] the group's lease deadlines, KEYS[3] its
-- delivery times. ARGV: group, ids... Returns how many of the ids were
-- pending (XACK's count); a missing stream or group acknowledges nothing.
local stream, leases, delivered = KEYS[1], KEYS[2], KEYS[3]
local ids = {unpack(ARGV, 2)}
local done = redis.pcall('XACK', stream, ARGV[1], unpack(ids))
if type(done) ~= 'number' then done = 0 end
redis.call('ZREM', leases, unpack(ids))
redis.call('HDEL', delivered, unpack(ids))
return done
