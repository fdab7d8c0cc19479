-- purge.lua: drop the expired slots of a pool now rather than at the next acquire.
--
-- KEYS[1]  the pool's sorted set (see acquire.lua)
--
-- Reply    the number of slots removed, or -1 when the server's clock reads 0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now <= 0 then return -1 end
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
