-- cache_fetch.lua: read a cached value, or claim the right to compute it, in one step.
-- Loaded after _lib.lua.
--
-- KEYS[1]  the value: a string key (pickled bytes), the same key py-cachify 3.1.0 writes
-- KEYS[2]  the fill claim: a string key holding the computing caller's token; it shares
--          KEYS[1]'s cluster slot (see cacheops.fill_key)
-- ARGV[1]  the caller's token (random per call)
-- ARGV[2]  how long a claim lasts in ms, so a computer that died frees it; 0 = never claim
--
-- Reply    {1, value, -1}   a hit
--          {0, '', -1}      a miss, and the caller now holds the claim: it computes
--          {2, '', ms}      a miss, and another caller is computing; its claim ends in
--                           ms at the latest (-1: unknown). Wait for its value.
local value = redis.call('GET', KEYS[1])
if value then return {1, value, -1} end
if tonumber(ARGV[2]) <= 0 then return {0, '', -1} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0, '', -1} end
return {2, '', redis.call('PTTL', KEYS[2])}
