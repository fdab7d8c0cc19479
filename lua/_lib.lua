-- _lib.lua: what every script shares. scripts.py puts the parts of it a script uses in
-- front of the script when it loads it, so the clock, the batch size and the key-TTL rule
-- exist once. One definition per blank-line-separated part, none of them spanning a blank line.
--
-- Numbers: Lua numbers are doubles and `..` prints them with %.14g, so every number a
-- script builds stays an exact integer below 1e14 (ops.py bounds max_size, lifetimes and
-- limits before a call is made); ms since the epoch are about 1.8e12.

-- Lua 5.4 engines have table.unpack only.
local unpack = table.unpack or unpack

-- Expired slots and lapsed waiters are dropped at most this many per call, so a backlog
-- (a crashed fleet's slots) never makes one call long.
local BATCH = 100

-- Redis's clock, never the client's: workers with skewed clocks still agree. Returns ms and
-- µs since the epoch; ms reads 0 only on a broken server, and the scripts that stamp or
-- compare expiries refuse to run then.
local function clock()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + math.floor(us / 1000), s * 1000000 + us
end

-- The key-TTL rule: the slots key lives at least as long as its latest slot, and for ever
-- while any slot never expires ('inf'). An abandoned pool then vanishes with the last slot
-- it granted, and a held one never does. acquire only raises the key's life (cover()), and
-- release leaves it (it can only end after the slots left), except when the slot that
-- goes never expired: keep_ttl() then sets it to the latest slot's expiry, as extend does.
-- When even the latest slot has expired, the key goes at the next ms: Redis's expiry frees
-- it, not this call, whose work must not grow with a backlog of expired slots.
local function keep_ttl(slots, now)
  local latest = redis.call('ZRANGE', slots, -1, -1, 'WITHSCORES')[2]
  if latest == 'inf' then
    redis.call('PERSIST', slots)
  elseif latest then
    redis.call('PEXPIREAT', slots, math.max(tonumber(latest), now + 1))
  end
end

-- Drop up to `limit` expired slots; they hold the lowest scores, so this is one range by
-- rank, O(log n + limit). Returns how many were dropped.
local function drop_expired(slots, now, limit)
  local n = redis.call('ZCOUNT', slots, '-inf', now)
  if n > limit then n = limit end
  if n > 0 then redis.call('ZREMRANGEBYRANK', slots, 0, n - 1) end
  return n
end

-- Live slots are counted by expiry, not by ZCARD: expired ones may still wait to be dropped.
local function live_count(slots, now)
  return redis.call('ZCOUNT', slots, '(' .. now, '+inf')
end

-- The live slots, dropping up to BATCH expired ones first. Counting the expired ones is
-- cheap (mostly none: one skip-list search), and ZCARD less those left is the live count.
local function live_after_drop(slots, now)
  local expired = redis.call('ZCOUNT', slots, '-inf', now)
  local dropped = 0
  if expired > 0 then
    dropped = math.min(expired, BATCH)
    redis.call('ZREMRANGEBYRANK', slots, 0, dropped - 1)
  end
  return redis.call('ZCARD', slots) - (expired - dropped)
end

-- PEXPIREAT's GT option (Redis >= 7; 6.2 and Lua engines without the version take PTTL first).
local HAS_GT = (redis.REDIS_VERSION_NUM or 0) >= 0x070000

-- The key-TTL rule when a slot of expiry `score` (ms or 'inf') is added to a set that held
-- `live` live slots: the key's life only rises to cover it. With no live slot before, no
-- never-expiring one is there and every expired one ends before `score`. The queue keys
-- follow the same rule for their leases (reserve_waiter()).
local function cover(slots, score, live, now)
  if score == 'inf' then
    redis.call('PERSIST', slots)
  elseif live == 0 then
    redis.call('PEXPIREAT', slots, score)
  elseif HAS_GT then
    -- A key without TTL holds a never-expiring slot: GT leaves it without one.
    redis.call('PEXPIREAT', slots, score, 'GT')
  else
    local pttl = redis.call('PTTL', slots)
    if pttl >= 0 and now + pttl < score then redis.call('PEXPIREAT', slots, score) end
  end
end

-- Waiters whose queue lease ran out have died or given up: up to BATCH of them lose
-- their place (the earliest lapsed first).
local function drop_lapsed(queue, leases, now)
  local gone = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, BATCH)
  if #gone > 0 then
    redis.call('ZREM', queue, unpack(gone))
    redis.call('ZREM', leases, unpack(gone))
  end
end

-- How long a release holds a freed slot for the waiter out of the queue it names (see
-- reserve_waiter()), in ms. Long enough for the message, a thread's wake-up and a round trip
-- on a loaded machine (a few ms; tens under a crowd of threads), so the named waiter is not
-- beaten to the slot by the caller that just released it and tries again at once. Short
-- enough that a named waiter that died holds a free slot idle once, for a fraction of the
-- 5 s poll that then brings the others; and a `nowait` caller is turned away that long.
local RESERVE_MS = 200

-- Hold a freed slot for one waiter out of the queue (fair=False), and name it: the live one
-- whose lease lapses first (the one that tried least recently), passing over the waiters
-- queued already: they hold leases too, and there are `queued` of them at most, so it looks
-- at most queued + 1 leases (and at most BATCH: '' past that). It joins the queue, at the
-- back (now_us, the queue's clock: fair waiters already queued stay ahead), with a lease of
-- RESERVE_MS: acquire.lua's queue rule then turns away every other caller for that slot
-- while it stands, and the named waiter takes it at its next try. If that try does not come
-- in time, drop_lapsed() ends the hold, and the slot is anyone's again. The queue keys'
-- lives rise to cover the hold (cover()). Returns the named waiter, or '' when none is live.
local function reserve_waiter(queue, leases, queued, now, now_us)
  local limit = math.min(queued + 1, BATCH)
  local live = redis.call('ZRANGEBYSCORE', leases, '(' .. now, '+inf', 'LIMIT', 0, limit)
  for _, waiter in ipairs(live) do
    if queued == 0 or not redis.call('ZSCORE', queue, waiter) then
      local until_ms = now + RESERVE_MS
      redis.call('ZADD', queue, now_us, waiter)
      cover(queue, until_ms, queued, now)
      redis.call('ZADD', leases, until_ms, waiter)
      cover(leases, until_ms, 1, now)
      return waiter
    end
  end
  return ''
end

-- A slot id begins with this many characters naming its process's mailbox (mailbox.py).
local MAILBOX = 2

-- Announce `message` on a wake-up channel. A message naming a waiter goes to the mailbox
-- of the waiter's process, `channel:` and the id's first MAILBOX characters, so only that
-- process wakes; '' (any waiter may try) goes to `channel`, which every waiting process
-- hears. `sharded` is the script's optional "sharded" argument: '1' on a Redis >= 7
-- Cluster, where SPUBLISH reaches only the nodes of the channel's shard instead of being
-- broadcast to every node; else PUBLISH (Redis 6.2, standalone, Sentinel). The channels
-- share the keys' hash tag, so they are in their slot.
local function publish(channel, message, sharded)
  if message ~= '' then channel = channel .. ':' .. string.sub(message, 1, MAILBOX) end
  redis.call(sharded == '1' and 'SPUBLISH' or 'PUBLISH', channel, message)
end

-- End of _lib.lua; the operation's own script follows.
