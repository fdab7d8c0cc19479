-- release.lua: give back one slot, and only the caller's own.
--
-- KEYS[1]  the pool's sorted set (see acquire.lua)
-- ARGV[1]  the caller's slot id
--
-- Reply    1 released
--          0 the slot was not there: it expired, or was released already. Slot ids
--            are random per acquire, so this never removes another holder's slot.
local key = KEYS[1]
local removed = redis.call('ZREM', key, ARGV[1])
if removed == 1 and redis.call('PTTL', key) == -1 then
  -- The key had no TTL because of a slot that never expires. If the slot with the
  -- latest expiry left now is finite, re-arm the TTL to it so the key cannot outlive it.
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] ~= 'inf' then redis.call('PEXPIREAT', key, last[2]) end
end
return removed
