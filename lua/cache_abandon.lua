-- cache_abandon.lua: give up a fill claim (the function raised): nothing is cached, and
-- the waiters are woken so that one of them computes instead. Loaded after _lib.lua.
--
-- KEYS[1]  the fill claim (see cache_fetch.lua)
-- ARGV[1]  the caller's token: only the caller's own claim is dropped
-- ARGV[2]  the wake-up channel of this value's waiters
-- ARGV[3]  optional: '1' to announce with SPUBLISH (see publish() in _lib.lua)
--
-- Reply    1 the claim was the caller's and is dropped; 0 it was not (it had expired)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
publish(ARGV[2], '', ARGV[3])
return 1
