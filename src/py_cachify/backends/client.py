"""A backend over any client with get / set(nx, ex) / delete, py-cachify 3.1.0's client protocol.

Such a client runs no Lua and has no pub/sub: it serves `cached`, `lock` and `once`, by
emulating their scripts with plain commands, and refuses pools with a clear error. Each
emulation is a generator of commands, driven by a sync and an async shell, so the two share
it. Waiters are woken by their poll (`lock_poll_interval`), never by a message.

What it gives up against Redis or the embedded store, by the protocol's nature: a release or
a store checks the holder's token and then deletes, in two commands, so a lock that expires
in between may lose its next holder's key; expiry is in whole seconds, by the client's clock.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

from ..cacheops import LOCK_NAMESPACE
from ..errors import CachifyBackendError, CachifyInitError
from ..giveback import GiveBacks
from ..notify import Wakeups
from ..ops import Call

__all__ = ['ClientBackend']

# One command: ('get', key) | ('set', key, value, ex seconds or None, nx) | ('delete', key)
_Command = tuple[Any, ...]
_Emulation = Generator[_Command, Any, object]


class ClientBackend:
    """Runs the lock and cache calls on protocol clients (`SyncClient` / `AsyncClient`)."""

    def __init__(self, sync_client: Any = None, async_client: Any = None) -> None:
        self._sync = sync_client
        self._async = async_client
        self.wakeups = Wakeups()
        self.give_backs = GiveBacks(self.run if sync_client is not None else None, self.arun)

    def run(self, call: Call) -> object:
        """Run `call` on the sync client."""
        if self._sync is None:
            raise CachifyInitError(f'{call.pool!r} is used from sync code, but no sync_client was given')
        steps = self._emulation(call)
        try:
            command = next(steps)
            while True:
                command = steps.send(self._send_sync(command))
        except StopIteration as done:
            return done.value
        except (CachifyInitError, CachifyBackendError):
            raise
        except Exception as exc:
            raise CachifyBackendError(call.pool, f'{type(exc).__name__}: {exc}') from exc

    async def arun(self, call: Call) -> object:
        """Run `call` on the async client."""
        if self._async is None:
            raise CachifyInitError(f'{call.pool!r} is used from async code, but no async_client was given')
        steps = self._emulation(call)
        try:
            command = next(steps)
            while True:
                command = steps.send(await self._send_async(command))
        except StopIteration as done:
            return done.value
        except (CachifyInitError, CachifyBackendError):
            raise
        except Exception as exc:
            raise CachifyBackendError(call.pool, f'{type(exc).__name__}: {exc}') from exc

    def listen(self, channel: str) -> None:
        """No pub/sub here: waiters poll."""

    def close(self) -> None:
        """Stop background give-backs; the clients are the caller's."""
        self.give_backs.close()

    async def aclose(self) -> None:
        """See `close`."""
        await self.give_backs.aclose()

    def _send_sync(self, command: _Command) -> Any:
        kind, key, *rest = command
        if kind == 'set':
            value, ex, nx = rest
            return self._sync.set(key, value, ex=ex, nx=nx)
        return getattr(self._sync, kind)(key)

    async def _send_async(self, command: _Command) -> Any:
        kind, key, *rest = command
        if kind == 'set':
            value, ex, nx = rest
            return await self._async.set(key, value, ex=ex, nx=nx)
        return await getattr(self._async, kind)(key)

    def _emulation(self, call: Call) -> _Emulation:
        emulate = _EMULATIONS.get(call.script)
        is_lock = call.pool.startswith(LOCK_NAMESPACE)
        if emulate is None or (call.script in _LOCK_SCRIPTS and not is_lock):
            raise CachifyInitError(
                f'pool {call.pool!r} needs Redis (a redis-py client) or the embedded default (no client): '
                'a client with only get/set/delete serves cached, lock and once'
            )
        emulation: _Emulation = emulate(*call.keys, *call.args)
        return emulation


def _seconds(ms: int | str) -> int | None:
    """A lifetime in ms as the protocol's whole seconds (rounded up), None for never."""
    return math.ceil(int(ms) / 1000) if int(ms) > 0 else None


def _same(stored: object, token: str) -> bool:
    return stored in (token, token.encode())


# -- a lock's pool of one (acquire.lua, release.lua, extend.lua, leave.lua, size.lua, lock_break.lua)


def _acquire(
    slots: str, queue: str, leases: str, slot: str, max_size: int | str, ttl: int | str, *_: object
) -> _Emulation:
    if (yield ('set', slots, slot, _seconds(ttl), True)):
        return [1, 1, -1]
    if _same((yield ('get', slots)), slot):
        return [2, 1, -1]
    return [0, 1, -1]


def _release(slots: str, queue: str, leases: str, slot: str, *_: object) -> _Emulation:
    if not _same((yield ('get', slots)), slot):
        return 0
    yield ('delete', slots)
    return 1


def _leave(queue: str, leases: str, slot: str, *_: object) -> _Emulation:
    # A lock's waiters here poll, with no queue or leases to leave: nothing to do.
    return 0
    yield  # a generator that sends no command


def _extend(slots: str, slot: str, ttl: int | str) -> _Emulation:
    if not _same((yield ('get', slots)), slot):
        return 0
    yield ('set', slots, slot, _seconds(ttl), False)
    return 1


def _size(slots: str) -> _Emulation:
    return 0 if (yield ('get', slots)) is None else 1


def _lock_break(slots: str, channel: str) -> _Emulation:
    return 1 if (yield ('delete', slots)) else 0


# -- the cache (cache_*.lua) -----------------------------------------------------------------


def _cache_fetch(value_key: str, fill: str, token: str, claim_ms: int | str) -> _Emulation:
    value = yield ('get', value_key)
    if value is not None:
        return [1, value, -1]
    if int(claim_ms) <= 0 or (yield ('set', fill, token, _seconds(claim_ms), True)):
        return [0, b'', -1]
    return [2, b'', -1]


def _cache_store(value_key: str, fill: str, token: str, value: bytes, ttl: int | str, channel: str) -> _Emulation:
    yield ('set', value_key, value, _seconds(ttl), False)
    if _same((yield ('get', fill)), token):
        yield ('delete', fill)
    return 1


def _cache_abandon(fill: str, token: str, channel: str) -> _Emulation:
    if not _same((yield ('get', fill)), token):
        return 0
    yield ('delete', fill)
    return 1


def _cache_delete(value_key: str) -> _Emulation:
    return 1 if (yield ('delete', value_key)) else 0


_EMULATIONS: dict[str, Any] = {
    'acquire': _acquire,
    'release': _release,
    'extend': _extend,
    'leave': _leave,
    'size': _size,
    'lock_break': _lock_break,
    'cache_fetch': _cache_fetch,
    'cache_store': _cache_store,
    'cache_abandon': _cache_abandon,
    'cache_delete': _cache_delete,
}
_LOCK_SCRIPTS = frozenset({'acquire', 'release', 'extend', 'leave', 'size', 'lock_break'})
