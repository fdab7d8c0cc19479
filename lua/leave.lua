-- leave.lua: a waiter that gives up (timeout, cancellation) leaves the queue now rather
-- than when its lease runs out, and passes on any wake-up it was owed. Loaded after
-- _lib.lua (it needs none of it: no clock, no slots).
--
-- KEYS[1]  queue (see acquire.lua)
-- KEYS[2]  queue leases (see acquire.lua)
-- ARGV[1]  the waiter's slot id
-- ARGV[2]  the pool's wake-up channel
--
-- Reply    1 if it was queued, else 0
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if removed == 1 then redis.call('PUBLISH', ARGV[2], '') end
return removed
