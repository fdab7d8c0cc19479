-- acquire.lua: take one slot in a pool if it has room, in one atomic step; optionally
-- join the pool's first-come-first-served queue to wait for one.
--
-- KEYS[1]  slots: sorted set, member = slot id, score = expiry in ms since the epoch
--          ('inf' for a slot that never expires)
-- KEYS[2]  queue: sorted set, member = waiting slot id, score = arrival (µs, Redis clock)
-- KEYS[3]  queue leases: sorted set, member = waiting slot id, score = when its waiter
--          counts as gone (ms) unless it calls again; a dead waiter never blocks the queue
-- ARGV[1]  the caller's slot id; acquiring the same id twice counts it once, so a client
--          library that re-sends the call after a timeout cannot take two slots
-- ARGV[2]  max_size, an integer >= 1
-- ARGV[3]  slot lifetime in ms, or 0 for a slot that never expires
-- ARGV[4]  1 = if no slot is free, queue (or stay queued) for one; 0 = do not queue
-- ARGV[5]  queue lease in ms
--
-- Queued waiters go first: a caller not in the queue gets a slot only when more slots are
-- free than waiters are queued, and the waiter at queue position r only when r < free.
--
-- Reply    {status, live slots after the call, ms until the nearest slot expiry or -1}
--          status  1 acquired
--                  2 this slot id was already held (a re-sent acquire): still acquired
--                  0 not acquired (full, or others are queued ahead)
--                 -1 the server's clock reads 0, so expiry cannot be trusted
local slots, queue, leases = KEYS[1], KEYS[2], KEYS[3]
local slot = ARGV[1]
local max_size, ttl, wants_queue, lease = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1', tonumber(ARGV[5])

-- Redis's clock, never the client's: workers with skewed clocks still agree.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now <= 0 then return {-1, 0, -1} end

-- Purge at most 100 expired slots per call, so a large backlog (a crashed fleet's
-- slots) never blocks Redis for long; live slots are counted by expiry, not by ZCARD.
local expired = redis.call('ZRANGEBYSCORE', slots, '-inf', now, 'LIMIT', 0, 100)
if #expired > 0 then redis.call('ZREM', slots, unpack(expired)) end
local live = redis.call('ZCOUNT', slots, '(' .. now, '+inf')
local held = redis.call('ZSCORE', slots, slot)
if held and (held == 'inf' or tonumber(held) > now) then return {2, live, -1} end

-- Waiters whose lease ran out have died or given up: they lose their place.
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now)) do
  redis.call('ZREM', queue, gone)
  redis.call('ZREM', leases, gone)
end
local free = max_size - live
local rank = redis.call('ZRANK', queue, slot)
local ahead = rank or redis.call('ZCARD', queue)

if ahead < free then
  if rank then
    redis.call('ZREM', queue, slot)
    redis.call('ZREM', leases, slot)
  end
  if ttl == 0 then
    redis.call('ZADD', slots, 'inf', slot)
    redis.call('PERSIST', slots)
  else
    redis.call('ZADD', slots, now + ttl, slot)
    -- The key's TTL only ever rises, to cover the latest expiry. PTTL -1 on a key that
    -- already had slots means one of them never expires, so the key must not either.
    local pttl = redis.call('PTTL', slots)
    if live == 0 or (pttl >= 0 and pttl < ttl) then redis.call('PEXPIRE', slots, ttl) end
  end
  return {1, live + 1, -1}
end

if wants_queue then
  if not rank then redis.call('ZADD', queue, tonumber(t[1]) * 1000000 + tonumber(t[2]), slot) end
  redis.call('ZADD', leases, now + lease, slot)
  redis.call('PEXPIRE', queue, lease)
  redis.call('PEXPIRE', leases, lease)
end
local nearest = redis.call('ZRANGEBYSCORE', slots, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)[2]
local wait = -1
if nearest and nearest ~= 'inf' then wait = tonumber(nearest) - now end
return {0, live, wait}
