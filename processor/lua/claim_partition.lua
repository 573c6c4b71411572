-- Take ownership of a partition: a new fencing epoch, and what Redis knows of it.
--
-- KEYS[1]  partition hash  sc:{<events topic>:<partition>}:p   fields: epoch, applied, wiped
--
-- Returns {epoch, applied offset or false, wiped or false}. `wiped` is set by a claim that
-- found the partition's state gone and halted (so the epoch it took does not read as an
-- owner's later). Any later call of decide_batch.lua made with an older epoch is refused, so
-- an instance that lost the partition cannot write.
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
local applied = redis.call('HGET', KEYS[1], 'applied')
local wiped = redis.call('HGET', KEYS[1], 'wiped')
return {epoch, applied, wiped}
