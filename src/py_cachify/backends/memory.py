"""The embedded default: the Lua scripts' twins over in-process sorted sets, for one process."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from ..errors import CachifyInitError
from ..giveback import GiveBacks
from ..mailbox import addressed
from ..notify import Wakeups
from ..ops import RESERVE_MS, Call

__all__ = ['MemoryBackend']

_INF = math.inf
_BATCH = 100  # _lib.lua's BATCH: expired slots and lapsed waiters dropped per call at most
# What the scripts that stamp or compare expiries answer when the clock reads 0.
_CLOCK_GUARDED: dict[str, object] = {'acquire': [-1, 0, -1], 'size': -1, 'purge': -1, 'extend': -1, 'holders': -1}


class MemoryBackend:
    """Pools held in this process, with the same rules and replies as the Lua scripts.

    Each method below mirrors the script of the same name line for line (and the helpers
    mirror `lua/_lib.lua`), over dicts that stand for Redis sorted sets with key expiry;
    tests/test_differential.py holds them to the scripts. One lock makes each call atomic across
    threads; asyncio code runs the same calls inline (each holds the lock for microseconds),
    so sync and async code share one store. `clock` returns seconds since the epoch.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._zsets: dict[str, dict[str, float]] = {}
        self._strings: dict[str, object] = {}  # the cache's values and fill claims (cacheops.py)
        self._expiry: dict[str, float] = {}  # key -> ms when it vanishes, like a Redis TTL
        self._next_sweep = 0.0
        self.wakeups = Wakeups(direct=True)  # a release wakes waiters by a call: nothing is lost
        self.give_backs = GiveBacks(self.run, self.arun)  # never needed: nothing here fails in transit

    def run(self, call: Call) -> object:
        """Run `call` atomically. Raises `CachifyInitError` for a durable call: there are no replicas here."""
        if call.replicas:
            raise CachifyInitError(
                f'pool {call.pool!r} asks for replicas={call.replicas}, but the embedded store has no replicas: '
                'give init_cachify a Redis client whose master has replicas'
            )
        with self._lock:
            now_us = round(self._clock() * 1_000_000)  # as fakeredis reads TIME from the same clock
            now = now_us // 1000
            if now <= 0 and call.script in _CLOCK_GUARDED:
                return _CLOCK_GUARDED[call.script]
            self._expire(call.keys, now)
            if now >= self._next_sweep:
                self._sweep(now)
            reply, wake = getattr(self, f'_{call.script}')(now_us, now, *call.keys, *call.args)
        if wake is not None:
            channel, payload = wake
            self.wakeups.deliver(addressed(channel, payload), payload)
        return reply

    async def arun(self, call: Call) -> object:
        """Run `call` atomically; it never waits on I/O."""
        return self.run(call)

    def listen(self, channel: str) -> None:
        """Releases here wake waiters directly: there is nothing to subscribe to."""

    def close(self) -> None:
        """Nothing runs in the background here but give-backs, which never fail."""
        self.give_backs.close()

    async def aclose(self) -> None:
        """See `close`."""
        await self.give_backs.aclose()

    # -- twins of the Lua scripts; each returns (reply, (channel, message) to publish or None)

    def _acquire(
        self,
        now_us: int,
        now: int,
        slots: str,
        queue: str,
        leases: str,
        slot: str,
        max_size: int | str,
        ttl: int | str,
        wants_queue: int | str,
        lease: int | str,
    ) -> tuple[object, None]:
        live = self._live_after_drop(slots, now)
        waiting = bool(self._zsets.get(leases))
        rank, ahead = None, 0
        if waiting:
            self._drop_lapsed(queue, leases, now)
            rank = self._rank(queue, slot)
            ahead = len(self._zsets.get(queue, {})) if rank is None else rank
        mode = str(wants_queue)
        if ahead < int(max_size) - live:
            score = now + int(ttl) if int(ttl) else _INF
            held = self._score(slots, slot)
            if held is not None and held > now:
                return [2, live, -1], None
            self._zset(slots)[slot] = score
            if rank is not None:
                self._zrem(queue, slot)
                self._zrem(leases, slot)
            elif waiting and mode != '0':
                self._zrem(leases, slot)
            self._cover(slots, score, live)
            return [1, live + 1, -1], None
        held = self._score(slots, slot)
        if held is not None and held > now:
            return [2, live, -1], None
        if mode != '0':
            if mode == '1':
                if rank is None:
                    self._zset(queue)[slot] = now_us
                self._expiry[queue] = now + int(lease)
            elif rank is not None:
                self._zrem(queue, slot)
            self._zset(leases)[slot] = now + int(lease)
            self._cover(leases, now + int(lease), len(self._zsets[leases]) - 1)
        nearest = min((exp for exp in self._zsets.get(slots, {}).values() if exp > now), default=_INF)
        return [0, live, -1 if nearest == _INF else int(nearest - now)], None

    def _release(
        self, now_us: int, now: int, slots: str, queue: str, leases: str, slot: str, max_size: int | str, channel: str
    ) -> tuple[object, tuple[str, str] | None]:
        expiry = self._score(slots, slot)
        if expiry is None:
            return 0, None
        self._zrem(slots, slot)
        if expiry == _INF:
            self._keep_ttl(slots, now)
        if expiry <= now:
            return 0, None
        if not self._zsets.get(leases):
            return 1, None
        self._drop_lapsed(queue, leases, now)
        free = int(max_size) - self._live_count(slots, now)
        owed = ''
        waiting = self._ordered(queue)
        if free > len(waiting):
            owed = self._reserve_waiter(queue, leases, len(waiting), now, now_us)
        elif free >= 1:
            waiter = waiting[free - 1][1]
            lapses = self._score(leases, waiter)
            if lapses is not None and lapses > now:
                owed = waiter
        return 1, (channel, owed)

    def _leave(
        self, now_us: int, now: int, queue: str, leases: str, slot: str, channel: str
    ) -> tuple[object, tuple[str, str] | None]:
        queued = int(self._zrem(queue, slot))
        leased = self._zrem(leases, slot)
        if queue in self._zsets:
            return queued, (channel, '') if queued else None
        if not queued and leased:
            return 0, None
        named = self._reserve_waiter(queue, leases, 0, now, now_us)
        return queued, (channel, named) if named else None

    def _extend(self, now_us: int, now: int, slots: str, slot: str, ttl: int | str) -> tuple[object, None]:
        expiry = self._score(slots, slot)
        if expiry is None or expiry <= now:
            return 0, None
        self._zsets[slots][slot] = now + int(ttl) if int(ttl) else _INF
        self._keep_ttl(slots, now)
        return 1, None

    def _size(self, now_us: int, now: int, slots: str) -> tuple[object, None]:
        return self._live_count(slots, now), None

    def _purge(self, now_us: int, now: int, slots: str, limit: int | str) -> tuple[object, None]:
        return self._drop_expired(slots, now, int(limit)), None

    def _holders(self, now_us: int, now: int, slots: str, limit: int | str) -> tuple[object, None]:
        live = [(exp, slot) for exp, slot in self._ordered(slots) if exp > now][: int(limit)]
        return [x for exp, slot in live for x in (slot, -1 if exp == _INF else int(exp - now))], None

    # -- twins of the lock and cache scripts (lock_break.lua, cache_*.lua)

    def _lock_break(self, now_us: int, now: int, slots: str, channel: str) -> tuple[object, tuple[str, str] | None]:
        if slots not in self._zsets:
            return 0, None
        self._delete(slots)
        return 1, (channel, '')

    def _cache_fetch(
        self, now_us: int, now: int, value_key: str, fill: str, token: str, claim_ms: int | str
    ) -> tuple[object, None]:
        value = self._strings.get(value_key)
        if value is not None:
            return [1, value, -1], None
        if int(claim_ms) <= 0:
            return [0, b'', -1], None
        if fill not in self._strings:
            self._strings[fill] = token
            self._expiry[fill] = now + int(claim_ms)
            return [0, b'', -1], None
        expiry = self._expiry.get(fill)
        return [2, b'', -1 if expiry is None else int(expiry - now)], None

    def _cache_store(
        self, now_us: int, now: int, value_key: str, fill: str, token: str, value: bytes, ttl: int | str, channel: str
    ) -> tuple[object, tuple[str, str]]:
        self._strings[value_key] = value
        if int(ttl) > 0:
            self._expiry[value_key] = now + int(ttl)
        else:
            self._expiry.pop(value_key, None)
        if self._strings.get(fill) == token:
            self._delete(fill)
        return 1, (channel, '')

    def _cache_abandon(
        self, now_us: int, now: int, fill: str, token: str, channel: str
    ) -> tuple[object, tuple[str, str] | None]:
        if self._strings.get(fill) != token:
            return 0, None
        self._delete(fill)
        return 1, (channel, '')

    def _cache_delete(self, now_us: int, now: int, value_key: str) -> tuple[object, None]:
        existed = value_key in self._strings
        self._delete(value_key)
        return int(existed), None

    # -- _lib.lua's helpers, the same rules

    def _keep_ttl(self, slots: str, now: int) -> None:
        zset = self._zsets.get(slots)
        if not zset:
            return
        latest = max(zset.values())
        if latest == _INF:
            self._expiry.pop(slots, None)
        else:
            self._expiry[slots] = max(latest, now + 1)

    def _cover(self, slots: str, score: float, live: int) -> None:
        if score == _INF:
            self._expiry.pop(slots, None)
        elif live == 0:
            self._expiry[slots] = score
        elif (current := self._expiry.get(slots)) is not None and current < score:
            self._expiry[slots] = score  # a key without expiry holds a never-expiring slot

    def _live_after_drop(self, slots: str, now: int) -> int:
        zset = self._zsets.get(slots)
        if not zset:
            return 0
        if min(zset.values()) > now:
            return len(zset)
        self._drop_expired(slots, now, _BATCH)
        return self._live_count(slots, now)

    def _drop_expired(self, slots: str, now: int, limit: int) -> int:
        expired = [(exp, slot) for exp, slot in self._ordered(slots) if exp <= now][:limit]
        for _, slot in expired:
            self._zrem(slots, slot)
        return len(expired)

    def _live_count(self, slots: str, now: int) -> int:
        return sum(1 for exp in self._zsets.get(slots, {}).values() if exp > now)

    def _drop_lapsed(self, queue: str, leases: str, now: int) -> None:
        for until, gone in self._ordered(leases)[:_BATCH]:
            if until > now:
                break
            self._zrem(queue, gone)
            self._zrem(leases, gone)

    def _reserve_waiter(self, queue: str, leases: str, queued: int, now: int, now_us: int) -> str:
        live = [waiter for until, waiter in self._ordered(leases) if until > now][: min(queued + 1, _BATCH)]
        for waiter in live:
            if queued == 0 or self._score(queue, waiter) is None:
                until = now + RESERVE_MS  # _lib.lua's RESERVE_MS
                self._zset(queue)[waiter] = now_us
                self._cover(queue, until, queued)
                self._zset(leases)[waiter] = until
                self._cover(leases, until, 1)
                return waiter
        return ''

    # -- the parts of Redis the scripts rely on: sorted sets that vanish when empty or expired

    def _zset(self, key: str) -> dict[str, float]:
        return self._zsets.setdefault(key, {})

    def _score(self, key: str, member: str) -> float | None:
        return self._zsets.get(key, {}).get(member)

    def _ordered(self, key: str) -> list[tuple[float, str]]:
        # Redis orders a sorted set by score, then by member.
        return sorted((score, member) for member, score in self._zsets.get(key, {}).items())

    def _rank(self, key: str, member: str) -> int | None:
        if member not in self._zsets.get(key, {}):
            return None
        return [m for _, m in self._ordered(key)].index(member)

    def _zrem(self, key: str, member: str) -> bool:
        zset = self._zsets.get(key)
        if zset is None or zset.pop(member, None) is None:
            return False
        if not zset:
            self._delete(key)  # as in Redis, an emptied sorted set is no key at all
        return True

    def _delete(self, key: str) -> None:
        self._zsets.pop(key, None)
        self._strings.pop(key, None)
        self._expiry.pop(key, None)

    def _expire(self, keys: tuple[str, ...], now: int) -> None:
        # Redis drops a key lazily once its time has passed (now > expiry, not >=).
        for key in keys:
            expiry = self._expiry.get(key)
            if expiry is not None and now > expiry:
                self._delete(key)

    def _sweep(self, now: int) -> None:
        # Reclaim keys nobody reads again (pools keyed per user or per task), as Redis does
        # actively, so they do not pile up in a long-running process.
        self._expire(tuple(self._expiry), now)
        self._next_sweep = now + 1000
