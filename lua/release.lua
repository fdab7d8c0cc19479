-- release.lua: give back one slot, and only the caller's own; wake a waiter.
--
-- KEYS[1]  slots (see acquire.lua)
-- KEYS[2]  queue (see acquire.lua)
-- ARGV[1]  the caller's slot id
-- ARGV[2]  max_size
-- ARGV[3]  the pool's wake-up channel
--
-- On release it publishes, atomically with it, the id of the queued waiter that the freed
-- slot is for (or '' when no queued waiter is owed it: any waiter may try).
--
-- Reply    1 released
--          0 the slot was not there: it expired, or was released already. Slot ids are
--            random per acquire, so this never removes another holder's slot.
local slots, queue = KEYS[1], KEYS[2]
local removed = redis.call('ZREM', slots, ARGV[1])
if removed == 0 then return 0 end

if redis.call('PTTL', slots) == -1 then
  -- The key had no TTL because of a slot that never expires. If the slot with the latest
  -- expiry left now is finite, re-arm the TTL to it so the key cannot outlive it.
  local last = redis.call('ZRANGE', slots, -1, -1, 'WITHSCORES')
  if last[2] and last[2] ~= 'inf' then redis.call('PEXPIREAT', slots, last[2]) end
end

-- Waiters at positions below `free` could already go; the one at free - 1 is owed this slot.
-- Live slots are counted by expiry: acquire purges expired ones only a batch at a time.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local free = tonumber(ARGV[2]) - redis.call('ZCOUNT', slots, '(' .. now, '+inf')
local owed = ''
if free >= 1 then owed = redis.call('ZRANGE', queue, free - 1, free - 1)[1] or '' end
redis.call('PUBLISH', ARGV[3], owed)
return 1
