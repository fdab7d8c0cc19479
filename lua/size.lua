-- size.lua: count the live (not yet expired) slots of a pool, O(log n). Writes nothing.
-- Loaded after _lib.lua.
--
-- KEYS[1]  slots (see acquire.lua)
--
-- Reply    the number of live slots, or -1 when the server's clock reads 0
local now = clock()
if now <= 0 then return -1 end
return live_count(KEYS[1], now)
