"""The embedded default: the Lua scripts' twins over in-process sorted sets, for one process."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from ..giveback import GiveBacks
from ..notify import Wakeups
from ..ops import Call

__all__ = ['MemoryBackend']

_INF = math.inf
# What the scripts that stamp or compare expiries answer when the clock reads 0.
_CLOCK_GUARDED: dict[str, object] = {'acquire': [-1, 0, -1], 'size': -1, 'purge': -1, 'extend': -1, 'holders': -1}


class MemoryBackend:
    """Pools held in this process, with the same rules and replies as the Lua scripts.

    Each method below mirrors the script of the same name line for line, over dicts that
    stand for Redis sorted sets with key expiry. One lock makes each call atomic across
    threads; asyncio code runs the same calls inline (each holds the lock for microseconds),
    so sync and async code share one store. `clock` returns seconds since the epoch.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._zsets: dict[str, dict[str, float]] = {}
        self._expiry: dict[str, float] = {}  # key -> ms when it vanishes, like a Redis TTL
        self._next_sweep = 0.0
        self.wakeups = Wakeups()
        self.give_backs = GiveBacks(self.run, self.arun)  # never needed: nothing here fails in transit

    def run(self, call: Call) -> object:
        """Run `call` atomically."""
        with self._lock:
            now_us = math.floor(self._clock() * 1_000_000)
            now = now_us // 1000
            if now <= 0 and call.script in _CLOCK_GUARDED:
                return _CLOCK_GUARDED[call.script]
            if now >= self._next_sweep:
                self._sweep(now)
            reply, wake = getattr(self, f'_{call.script}')(now_us, now, *call.keys, *call.args)
        if wake is not None:
            self.wakeups.deliver(*wake)
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
        live_slots = self._purged(slots, now)
        if slot in live_slots:
            return [2, len(live_slots), -1], None
        waiting, lapsing = self._zsets.get(queue, {}), self._zsets.get(leases, {})
        for gone in [s for s, until in lapsing.items() if until <= now]:
            waiting.pop(gone, None)
            lapsing.pop(gone, None)
        free = int(max_size) - len(live_slots)
        rank = sorted(waiting, key=waiting.__getitem__).index(slot) if slot in waiting else None
        ahead = len(waiting) if rank is None else rank
        if ahead < free:
            if rank is not None:
                waiting.pop(slot)
                lapsing.pop(slot, None)
            expiry = now + int(ttl) if int(ttl) else _INF
            live_slots[slot] = expiry
            self._raise_expiry(slots, expiry)
            return [1, len(live_slots), -1], None
        if int(wants_queue):
            self._zset(queue).setdefault(slot, now_us)
            self._zset(leases)[slot] = now + int(lease)
            self._expiry[queue] = self._expiry[leases] = now + int(lease)
        nearest = min(live_slots.values(), default=_INF)
        return [0, len(live_slots), -1 if nearest == _INF else int(nearest - now)], None

    def _release(
        self, now_us: int, now: int, slots: str, queue: str, slot: str, max_size: int | str, channel: str
    ) -> tuple[object, tuple[str, str] | None]:
        held = self._zsets.get(slots, {})
        if held.pop(slot, None) is None:
            return 0, None
        free = int(max_size) - len(held)
        waiting = self._zsets.get(queue, {})
        order = sorted(waiting, key=waiting.__getitem__)
        owed = order[free - 1] if 1 <= free <= len(order) else ''
        if held:
            self._expiry[slots] = max(held.values())  # as release.lua re-arms the TTL
        self._forget_if_empty(slots)
        return 1, (channel, owed)

    def _leave(
        self, now_us: int, now: int, queue: str, leases: str, slot: str, channel: str
    ) -> tuple[object, tuple[str, str] | None]:
        removed = self._zsets.get(queue, {}).pop(slot, None) is not None
        self._zsets.get(leases, {}).pop(slot, None)
        return int(removed), (channel, '') if removed else None

    def _extend(self, now_us: int, now: int, slots: str, slot: str, ttl: int | str) -> tuple[object, None]:
        held = self._zsets.get(slots, {})
        expiry = held.get(slot)
        if expiry is None or expiry <= now:
            return 0, None
        held[slot] = now + int(ttl) if int(ttl) else _INF
        self._raise_expiry(slots, held[slot])
        return 1, None

    def _size(self, now_us: int, now: int, slots: str) -> tuple[object, None]:
        return sum(1 for exp in self._zsets.get(slots, {}).values() if exp > now), None

    def _purge(self, now_us: int, now: int, slots: str) -> tuple[object, None]:
        before = len(self._zsets.get(slots, {}))
        return before - len(self._purged(slots, now)), None

    def _holders(self, now_us: int, now: int, slots: str) -> tuple[object, None]:
        live = sorted((exp, slot) for slot, exp in self._zsets.get(slots, {}).items() if exp > now)
        return [x for exp, slot in live for x in (slot, -1 if exp == _INF else int(exp - now))], None

    # -- the parts of Redis the scripts rely on: sorted sets that vanish when empty or expired

    def _zset(self, key: str) -> dict[str, float]:
        return self._zsets.setdefault(key, {})

    def _purged(self, key: str, now: int) -> dict[str, float]:
        zset = self._zset(key)
        for slot in [slot for slot, exp in zset.items() if exp <= now]:
            del zset[slot]
        return zset

    def _raise_expiry(self, key: str, expiry: float) -> None:
        # As in the scripts: the key lives at least as long as its latest slot.
        self._expiry[key] = max(self._expiry.get(key, 0), expiry)

    def _forget_if_empty(self, key: str) -> None:
        if not self._zsets.get(key):
            self._zsets.pop(key, None)
            self._expiry.pop(key, None)

    def _sweep(self, now: int) -> None:
        # Redis drops a key at its TTL; do the same so pools keyed per user or per task do
        # not pile up in a long-running process.
        for key in [key for key, expiry in self._expiry.items() if expiry <= now]:
            self._zsets.pop(key, None)
            del self._expiry[key]
        for key in [key for key, zset in self._zsets.items() if not zset]:
            self._forget_if_empty(key)
        self._next_sweep = now + 1000
