-- leave.lua: a waiter that gives up (timeout, cancellation) leaves the queue now rather
-- than when its lease runs out, and passes on any wake-up it was owed. Loaded after
-- _lib.lua (it needs only publish(): no clock, no slots).
--
-- KEYS[1]  queue (see acquire.lua)
-- KEYS[2]  queue leases (see acquire.lua)
-- ARGV[1]  the waiter's slot id
-- ARGV[2]  the pool's wake-up channel
-- ARGV[3]  optional: '1' to announce with SPUBLISH (see publish() in _lib.lua)
--
-- Reply    1 if it was queued, else 0
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if removed == 1 then publish(ARGV[2], '', ARGV[3]) end
return removed
