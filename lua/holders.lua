-- holders.lua: the live slots of a pool that expire soonest, and how long each has left.
-- Writes nothing. Loaded after _lib.lua.
--
-- KEYS[1]  slots (see acquire.lua)
-- ARGV[1]  limit: at most this many slots are listed (O(log n + limit)); size.lua counts all
--
-- Reply    {slot id, ms left (-1 = never expires), slot id, ms left, ...}, soonest expiry
--          first (ties by slot id); or -1 when the server's clock reads 0
local now = clock()
if now <= 0 then return -1 end

local reply = {}
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, ARGV[1])
for i = 1, #live, 2 do
  reply[#reply + 1] = live[i]
  reply[#reply + 1] = live[i + 1] == 'inf' and -1 or tonumber(live[i + 1]) - now
end
return reply
