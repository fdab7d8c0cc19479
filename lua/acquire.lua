-- acquire.lua: take one slot in a pool if it has room, in one atomic step.
--
-- KEYS[1]  the pool's sorted set: member = slot id, score = expiry in ms since the epoch
--          ('inf' for a slot that never expires)
-- ARGV[1]  the caller's slot id; acquiring the same id twice counts it once, so a
--          client library that re-sends the call after a timeout cannot take two slots
-- ARGV[2]  max_size, an integer >= 1
-- ARGV[3]  slot lifetime in ms, or 0 for a slot that never expires
--
-- Reply    {status, live slots after the call}
--          status  1 acquired
--                  2 this slot id was already held (a re-sent acquire): still acquired
--                  0 full
--                 -1 the server's clock reads 0, so expiry cannot be trusted
local key, slot = KEYS[1], ARGV[1]
local max_size, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])

-- Redis's clock, never the client's: workers with skewed clocks still agree.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now <= 0 then return {-1, 0} end

redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local live = redis.call('ZCARD', key)
if redis.call('ZSCORE', key, slot) then return {2, live} end
if live >= max_size then return {0, live} end

if ttl == 0 then
  redis.call('ZADD', key, 'inf', slot)
  redis.call('PERSIST', key)
else
  redis.call('ZADD', key, now + ttl, slot)
  -- The key's TTL only ever rises, to cover the latest expiry. PTTL -1 on a key that
  -- already had slots means one of them never expires, so the key must not either.
  local pttl = redis.call('PTTL', key)
  if live == 0 or (pttl >= 0 and pttl < ttl) then redis.call('PEXPIRE', key, ttl) end
end
return {1, live + 1}
