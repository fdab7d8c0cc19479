-- lock_break.lua: free a lock whoever holds it (py-cachify 3.1.0's decorator `release()`),
-- and wake one waiter. Loaded after _lib.lua.
--
-- KEYS[1]  the lock's slots: the sorted set of its pool of one (see acquire.lua)
-- ARGV[1]  the lock's wake-up channel
-- ARGV[2]  optional: '1' to announce with SPUBLISH (see publish() in _lib.lua)
--
-- Reply    1 it was held (or held an expired slot) and is free now; 0 nothing was there
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
publish(ARGV[1], '', ARGV[2])
return 1
