-- release.lua: give back one slot, and only the caller's own; wake a waiter.
-- Loaded after _lib.lua.
--
-- KEYS[1]  slots (see acquire.lua)
-- KEYS[2]  queue (see acquire.lua)
-- KEYS[3]  leases: every waiter's, queued or not (see acquire.lua)
-- ARGV[1]  the caller's slot id
-- ARGV[2]  max_size (see acquire.lua)
-- ARGV[3]  the pool's wake-up channel
-- ARGV[4]  optional: '1' to announce with SPUBLISH (see publish() in _lib.lua)
--
-- On release of a live slot while anyone waits (holds a lease), it publishes, atomically
-- with it, the id of one waiter, so that one release wakes one waiter in the whole fleet, not
-- one in every listening process. With `free` slots free now and `queued` waiters queued:
-- - free <= queued: the queued waiter that the freed slot is for (position free - 1), if its
--   lease is live, else '' (any waiter may try);
-- - free > queued: the slot is for a waiter out of the queue (fair=False). The release holds
--   it for one of them, the one that tried least recently, for RESERVE_MS, and names it (see
--   reserve_waiter() in _lib.lua): meanwhile every other caller, waiting or `nowait`, counts
--   the slot as taken, so the caller that has just released cannot take it straight back
--   while the named waiter is still being woken. '' when no such waiter is live.
-- It never names a waiter whose lease has run out. With no waiter it publishes nothing.
--
-- Reply    1 released
--          0 the slot was not held: it had expired (it is removed now, and nobody is
--            woken: its expiry had already freed the place), or was released already.
--            Slot ids are random per acquire, so this never removes another holder's slot.
local slots, queue, leases, slot = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
-- No clock guard: giving a slot back must work even on a broken clock (now <= 0 then
-- counts every slot as live).
local now, now_us = clock()
local expiry = redis.call('ZSCORE', slots, slot)
if not expiry then return 0 end
redis.call('ZREM', slots, slot)
-- Only a never-expiring slot's going can let the key's life shrink (see _lib.lua).
if expiry == 'inf' then keep_ttl(slots, now) end
if expiry ~= 'inf' and tonumber(expiry) <= now then return 0 end
-- Every waiter, queued or not, holds a lease (acquire.lua): none, and nobody is to be woken.
if redis.call('ZCARD', leases) == 0 then return 1 end

-- Waiters at positions below `free` could already go; the one at free - 1 is owed this slot.
drop_lapsed(queue, leases, now)
local free = tonumber(ARGV[2]) - live_count(slots, now)
local queued = redis.call('ZCARD', queue)
local owed = ''
if free > queued then
  owed = reserve_waiter(queue, leases, queued, now, now_us)
elseif free >= 1 then
  local waiter = redis.call('ZRANGE', queue, free - 1, free - 1)[1]
  local lapses = redis.call('ZSCORE', leases, waiter)
  -- More than BATCH lapsed waiters may be left in the queue: name only a live one.
  if lapses and tonumber(lapses) > now then owed = waiter end
end
publish(ARGV[3], owed, ARGV[4])
return 1
