-- size.lua: count the live (not yet expired) slots of a pool. Writes nothing.
--
-- KEYS[1]  the pool's sorted set (see acquire.lua)
--
-- Reply    the number of live slots, or -1 when the server's clock reads 0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now <= 0 then return -1 end
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
