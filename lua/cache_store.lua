-- cache_store.lua: store a computed value, drop the caller's fill claim, wake the waiters.
-- Loaded after _lib.lua.
--
-- KEYS[1]  the value (see cache_fetch.lua)
-- KEYS[2]  the fill claim (see cache_fetch.lua)
-- ARGV[1]  the caller's token: the claim is dropped only if it is still this caller's
-- ARGV[2]  the value, already encoded
-- ARGV[3]  its lifetime in ms, or 0 for no expiry
-- ARGV[4]  the wake-up channel of this value's waiters
-- ARGV[5]  optional: '1' to announce with SPUBLISH (see publish() in _lib.lua)
--
-- Reply    1
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
publish(ARGV[4], '', ARGV[5])
return 1
