-- extend.lua: push a held slot's expiry out, only if the caller still holds it.
-- Loaded after _lib.lua.
--
-- KEYS[1]  slots (see acquire.lua)
-- ARGV[1]  the caller's slot id
-- ARGV[2]  new lifetime from now in ms, or 0 for never
--
-- Reply    1 extended
--          0 the slot is gone (expired, possibly purged): the caller no longer holds it
--         -1 the server's clock reads 0
local slots, slot, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2])
local now = clock()
if now <= 0 then return -1 end

local expiry = redis.call('ZSCORE', slots, slot)
if not expiry or (expiry ~= 'inf' and tonumber(expiry) <= now) then return 0 end
redis.call('ZADD', slots, 'XX', ttl == 0 and 'inf' or now + ttl, slot)
keep_ttl(slots, now)
return 1
