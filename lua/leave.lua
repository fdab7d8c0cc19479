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
-- A queued waiter's going moves those behind it up: while others are queued, it publishes
-- '', as any of them may now be owed a slot. A waiter out of the queue (fair=False) that
-- still holds its lease was not named since its last try: it owes nobody anything.
-- A waiter that leaves the queue empty may have swallowed a slot meant for it: the last
-- queued one (fair, or out of the queue with a slot held for it: see reserve_waiter() in
-- _lib.lua), or one out of the queue whose lease is gone (a hold that lapsed, or a lease
-- that did). It then holds the slot for the next waiter out of the queue and names it in its
-- place, as a release does: one wake-up, where '' would wake one waiter in every process.
-- This script cannot see the slots: when none was free after all (the lease had lapsed, or
-- the slot was taken meanwhile), the named waiter tries once in vain and goes back out of
-- the queue (acquire.lua), holding up nobody.
--
-- Reply    1 if it was queued, else 0
local queue, leases, slot = KEYS[1], KEYS[2], ARGV[1]
local queued = redis.call('ZREM', queue, slot)
local leased = redis.call('ZREM', leases, slot)
if redis.call('EXISTS', queue) == 1 then
  if queued == 1 then publish(ARGV[2], '', ARGV[3]) end
  return queued
end
if queued == 0 and leased == 1 then return 0 end
local now, now_us = clock()
local named = reserve_waiter(queue, leases, 0, now, now_us)
if named ~= '' then publish(ARGV[2], named, ARGV[3]) end
return queued
