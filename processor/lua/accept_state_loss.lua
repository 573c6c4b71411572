-- An operator accepted that Redis lost this partition's state: start deciding again
-- from the committed offset with whatever state Redis holds now.
--
-- KEYS[1]  partition hash  sc:{<events topic>:<partition>}:p
-- ARGV[1]  epoch of the caller   ARGV[2] the last offset to treat as applied
--
-- Returns 1, or 'FENCED:<epoch>' when a newer owner took the partition.
local current = redis.call('HGET', KEYS[1], 'epoch')
if current ~= ARGV[1] then return 'FENCED:' .. tostring(current) end
redis.call('HSET', KEYS[1], 'applied', ARGV[2])
redis.call('HDEL', KEYS[1], 'wiped')
return 1
