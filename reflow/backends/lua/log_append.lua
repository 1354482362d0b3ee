-- Append several entries to one stream at once, all or nothing.
--
-- KEYS[1] the stream. ARGV: the field name, then one payload per entry.
-- Returns the new ids in order. A script runs atomically, so no other
-- client's entry lands between them, and a reader sees all or none.
local stream, field = KEYS[1], ARGV[1]
local ids = {}
for i = 2, #ARGV do
  ids[#ids + 1] = redis.call('XADD', stream, '*', field, ARGV[i])
end
return ids
