-- acquire.lua: take one slot in a pool if it has room, in one atomic step; optionally
-- join the pool's first-come-first-served queue to wait for one. Loaded after _lib.lua.
--
-- KEYS[1]  slots: sorted set, member = slot id, score = expiry in ms since the epoch
--          ('inf' for a slot that never expires); the key lives at least as long as its
--          latest slot (see the key-TTL rule in _lib.lua)
-- KEYS[2]  queue: sorted set, member = waiting slot id, score = arrival (µs, Redis clock)
-- KEYS[3]  leases: sorted set, member = waiting slot id, score = when its waiter counts as
--          gone (ms) unless it calls again. Every waiter is here, queued or not, so release
--          publishes only while someone waits; a dead waiter never blocks the queue
-- ARGV[1]  the caller's slot id; acquiring the same id twice counts it once, so a client
--          library that re-sends the call after a timeout cannot take two slots
-- ARGV[2]  max_size, an integer >= 1 (at most 2^32: a sorted set holds fewer members)
-- ARGV[3]  slot lifetime in ms, or 0 for a slot that never expires
-- ARGV[4]  if no slot is free: 1 = queue (or stay queued) for one; 2 = wait without a
--          place in the queue (leases only); 0 = do not wait
-- ARGV[5]  lease in ms (ops.py: short for queued waiters, longer for the others)
--
-- Queued waiters go first: a caller not in the queue gets a slot only when more slots are
-- free than waiters are queued, and the waiter at queue position r only when r < free.
-- The queue also holds the waiters out of it (mode 2) that a release named and holds a freed
-- slot for, for a short while (see reserve_waiter() in _lib.lua): each takes it at its next
-- try, as a queued waiter does, and every other caller, `nowait` ones too, counts it taken.
-- Bounded work: at most BATCH expired slots and BATCH lapsed waiters are dropped per call.
-- The common call (nothing expired, nobody waiting) runs six commands: TIME, ZCOUNT, ZCARD,
-- ZCARD, ZADD, PEXPIREAT.
--
-- Reply    {status, live slots after the call, ms until the nearest slot expiry or -1}
--          status  1 acquired
--                  2 this slot id was already held (a re-sent acquire): still acquired
--                  0 not acquired (full, or others are queued ahead)
--                 -1 the server's clock reads 0, so expiry cannot be trusted
local slots, queue, leases = KEYS[1], KEYS[2], KEYS[3]
local slot = ARGV[1]
local max_size, ttl, mode, lease = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local now, now_us = clock()
if now <= 0 then return {-1, 0, -1} end

local live = live_after_drop(slots, now)
-- Nobody waits unless someone holds a lease: the queue (a subset) is then empty too.
local waiting = redis.call('ZCARD', leases) > 0
local rank, ahead = false, 0
if waiting then
  drop_lapsed(queue, leases, now)
  rank = redis.call('ZRANK', queue, slot)
  ahead = rank or redis.call('ZCARD', queue)
end

if ahead < max_size - live then
  local score = ttl == 0 and 'inf' or now + ttl
  if redis.call('ZADD', slots, 'NX', score, slot) == 0 then
    -- This id is there already: a re-sent acquire of a live slot, or an expired one of the
    -- same id not yet dropped, which is simply overwritten.
    local held = redis.call('ZSCORE', slots, slot)
    if held == 'inf' or tonumber(held) > now then return {2, live, -1} end
    redis.call('ZADD', slots, score, slot)
  end
  if rank then
    redis.call('ZREM', queue, slot)
    redis.call('ZREM', leases, slot)
  elseif waiting and mode ~= '0' then
    redis.call('ZREM', leases, slot)  -- a waiter out of the queue: it waits no more
  end
  cover(slots, score, live, now)
  return {1, live + 1, -1}
end

local held = redis.call('ZSCORE', slots, slot)
if held and (held == 'inf' or tonumber(held) > now) then return {2, live, -1} end
if mode ~= '0' then
  -- The queue keys live as long as their latest lease, which this one is.
  if mode == '1' then
    if not rank then redis.call('ZADD', queue, now_us, slot) end
    redis.call('PEXPIREAT', queue, now + lease)
  elseif rank then
    -- A slot held for this waiter out of the queue (see reserve_waiter() in _lib.lua) that
    -- it cannot take after all (no slot was free): it goes back out of the queue, at the
    -- back of the leases, rather than stay queued on a long lease ahead of everyone.
    redis.call('ZREM', queue, slot)
  end
  -- The leases key's life only rises: a fair waiter's short lease must not cut short those
  -- of waiters out of the queue on the same pool (cover() in _lib.lua; alone, it sets it).
  redis.call('ZADD', leases, now + lease, slot)
  cover(leases, now + lease, redis.call('ZCARD', leases) - 1, now)
end
local nearest = redis.call('ZRANGEBYSCORE', slots, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)[2]
local wait = -1
if nearest and nearest ~= 'inf' then wait = tonumber(nearest) - now end
return {0, live, wait}
