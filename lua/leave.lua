-- leave.lua: a waiter that gives up (timeout, cancellation, failure) leaves now rather than
-- when its lease runs out, and passes on any wake-up it may have swallowed. Loaded after
-- _lib.lua.
--
-- KEYS[1]  queue (see acquire.lua)
-- KEYS[2]  leases: every waiter's, queued or not (see acquire.lua)
-- ARGV[1]  the waiter's slot id
-- ARGV[2]  the pool's wake-up channel
-- ARGV[3]  optional: '1' to announce with SPUBLISH (see publish() in _lib.lua)
--
-- A queued waiter's going moves those behind it up: it publishes '', as any of them may now
-- be owed a slot. A waiter out of the queue (fair=False) that still holds its lease was not
-- named since its last try: it owes nobody anything. One whose lease is gone may have been
-- named by a release (name_waiter() takes the lease) and never have tried for that slot:
-- while nobody is queued, it names the next waiter out of the queue in its place. When its
-- lease had lapsed instead, or the slot was taken meanwhile, that costs one try in vain.
--
-- Reply    1 if it was queued, else 0
local queue, leases, slot = KEYS[1], KEYS[2], ARGV[1]
if redis.call('ZREM', queue, slot) == 1 then
  redis.call('ZREM', leases, slot)
  publish(ARGV[2], '', ARGV[3])
  return 1
end
if redis.call('ZREM', leases, slot) == 1 or redis.call('EXISTS', queue) == 1 then return 0 end
local named = name_waiter(leases, clock())
if named ~= '' then publish(ARGV[2], named, ARGV[3]) end
return 0
