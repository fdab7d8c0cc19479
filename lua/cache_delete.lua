-- cache_delete.lua: forget a cached value (`reset`). Loaded after _lib.lua.
--
-- KEYS[1]  the value (see cache_fetch.lua)
--
-- Reply    1 it was there; 0 it was not
return redis.call('DEL', KEYS[1])
