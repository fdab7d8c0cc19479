"""The embedded default: the Lua scripts' twins over a dict, for one process and no server."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from ..ops import Call

__all__ = ['MemoryBackend']

_SWEEP_EVERY_MS = 1000


class MemoryBackend:
    """Pools held in this process, with the same rules and replies as the Lua scripts.

    One lock makes each call atomic across threads; asyncio code runs the same calls inline
    (each holds the lock for microseconds), so sync and async code share one store.
    `clock` returns seconds since the epoch and can be swapped in tests.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pools: dict[str, dict[str, float]] = {}
        self._next_sweep = 0

    def run(self, call: Call) -> object:
        """Run `call` atomically."""
        with self._lock:
            now = math.floor(self._clock() * 1000)
            if now <= 0:
                return -1 if call.script in ('size', 'purge') else [-1, 0]
            if now >= self._next_sweep:
                self._sweep(now)
            key = call.keys[0]
            if call.script == 'acquire':
                slot, max_size, ttl = call.args
                return self._acquire(now, key, str(slot), int(max_size), int(ttl))
            if call.script == 'release':
                return self._release(key, str(call.args[0]))
            if call.script == 'size':
                return sum(1 for exp in self._pools.get(key, {}).values() if exp > now)
            return self._purge(now, key)

    async def arun(self, call: Call) -> object:
        """Run `call` atomically; it never waits on I/O."""
        return self.run(call)

    def _acquire(self, now: int, key: str, slot: str, max_size: int, ttl: int) -> list[int]:
        self._purge(now, key)
        slots = self._pools.setdefault(key, {})
        live = len(slots)
        if slot in slots:
            return [2, live]
        if live >= max_size:
            return [0, live]
        slots[slot] = now + ttl if ttl else math.inf
        return [1, live + 1]

    def _release(self, key: str, slot: str) -> int:
        slots = self._pools.get(key)
        if slots is None or slots.pop(slot, None) is None:
            return 0
        if not slots:
            del self._pools[key]
        return 1

    def _purge(self, now: int, key: str) -> int:
        slots = self._pools.get(key)
        if not slots:
            return 0
        expired = [slot for slot, exp in slots.items() if exp <= now]
        for slot in expired:
            del slots[slot]
        if not slots:
            del self._pools[key]
        return len(expired)

    def _sweep(self, now: int) -> None:
        # Redis drops a pool's key once its last slot expires; do the same so pools keyed
        # per user or per task do not pile up in a long-running process.
        for key in list(self._pools):
            self._purge(now, key)
        self._next_sweep = now + _SWEEP_EVERY_MS
