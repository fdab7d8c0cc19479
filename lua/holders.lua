-- holders.lua: the live slots of a pool and how long each has left. Writes nothing.
--
-- KEYS[1]  slots (see acquire.lua)
--
-- Reply    {slot id, ms left (-1 = never expires), slot id, ms left, ...}, soonest first;
--          or -1 when the server's clock reads 0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now <= 0 then return -1 end

local reply = {}
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #live, 2 do
  reply[#reply + 1] = live[i]
  reply[#reply + 1] = live[i + 1] == 'inf' and -1 or tonumber(live[i + 1]) - now
end
return reply
