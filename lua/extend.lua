-- extend.lua: push a held slot's expiry out, only if the caller still holds it.
--
-- KEYS[1]  slots (see acquire.lua)
-- ARGV[1]  the caller's slot id
-- ARGV[2]  new lifetime from now in ms, or 0 for never
--
-- Reply    1 extended
--          0 the slot is gone (expired, possibly purged): the caller no longer holds it
--         -1 the server's clock reads 0
local slots, slot, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now <= 0 then return -1 end

local expiry = redis.call('ZSCORE', slots, slot)
if not expiry or (expiry ~= 'inf' and tonumber(expiry) <= now) then return 0 end
if ttl == 0 then
  redis.call('ZADD', slots, 'XX', 'inf', slot)
  redis.call('PERSIST', slots)
else
  redis.call('ZADD', slots, 'XX', now + ttl, slot)
  local pttl = redis.call('PTTL', slots)
  if pttl >= 0 and pttl < ttl then redis.call('PEXPIRE', slots, ttl) end
end
return 1
