-- purge.lua: drop expired slots of a pool now rather than at the next acquires, a bounded
-- batch per call (pool.purge() calls it until a batch comes back short). Loaded after _lib.lua.
--
-- KEYS[1]  slots (see acquire.lua)
-- ARGV[1]  limit: drop at most this many (O(log n + limit))
--
-- Reply    the number of slots dropped, or -1 when the server's clock reads 0
local now = clock()
if now <= 0 then return -1 end
-- Only the lowest scores go, so the latest slot, and with it the key's TTL, stays.
return drop_expired(KEYS[1], now, tonumber(ARGV[1]))
