"""A held slot (a lease), and the stack of leases each context holds through `with`.

A lease belongs to the process that took it and remembers the store it was taken on, so
it can be released from any thread, task or context, and a later `init_cachify()` does not
redirect its release. Which leases a context holds lives in one module-level `ContextVar`
(a short tuple, empty when nothing is held), never in one variable per pool object.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import threading
import time
from collections.abc import Coroutine
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from . import renewal
from .errors import CachifyBackendError
from .ops import Call, SlotExp, extend_call, flag, release_call, ttl_ms, validate_seconds

if TYPE_CHECKING:
    from .pool import pool
    from .settings import Settings

__all__ = ['Lease', 'held', 'pop', 'push', 'survive_cancellation']

log = logging.getLogger('py_cachify')

T = TypeVar('T')


class State(enum.Enum):
    HELD = 'held'
    RELEASING = 'releasing'  # the release is under way; a second release() waits for nothing
    RELEASED = 'released'


class Lease:
    """One slot of a pool, held until `release()` / `arelease()`, or until it expires.

    Made by `pool.acquire()` / `pool.aacquire()`. `with lease:` / `async with lease:` makes it
    the innermost lease of the current context (so `pool.extend()` finds it) and releases it
    on exit, also when the body raises or the task is cancelled, any number of times.
    `lost` turns True once the pool reports the slot gone (it expired before a renewal or a
    release reached it).
    """

    __slots__ = ('_expires_at', '_lock', '_pid', '_released', '_renewer', '_settings', '_state', 'lost', 'pool', 'slot')

    def __init__(self, pool: pool, settings: Settings, slot: str, lifetime: SlotExp) -> None:
        self.pool = pool
        self.slot = slot
        self.lost = False
        self._settings = settings
        self._state = State.HELD
        self._released = False
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._expires_at = _deadline(lifetime)
        self._renewer: renewal.ThreadRenewer | renewal.TaskRenewer | None = None

    @property
    def key(self) -> str:
        """The pool's key, without the prefix."""
        return self.pool.key

    @property
    def held(self) -> bool:
        """True until the lease is released (it may still have expired: see `lost`)."""
        return self._state is State.HELD

    def __repr__(self) -> str:
        return f'<Lease {self.slot} of pool {self.pool.key!r}, {self._state.value}{", lost" if self.lost else ""}>'

    # -- releasing: one rule, a sync and an async driver ---------------------------------

    def release(self) -> bool:
        """Give the slot back; idempotent. Returns False if it had expired before (logged).

        Raises `CachifyBackendError` if Redis cannot be reached; the release is then retried
        in the background until it lands or the slot expires by itself.
        """
        call = self._begin_release()
        if call is None:
            return self._released
        if self._renewer is not None:
            self._renewer.stop()
        try:
            reply = self._settings.backend.run(call)
        except CachifyBackendError as exc:
            self._retry_later(call, exc)
            raise
        return self._end_release(reply, call)

    async def arelease(self) -> bool:
        """`release` for asyncio; it completes even if the caller is cancelled meanwhile."""
        return await survive_cancellation(self._arelease())

    async def _arelease(self) -> bool:
        call = self._begin_release()
        if call is None:
            return self._released
        if self._renewer is not None:
            await self._renewer.astop()
        try:
            reply = await self._settings.backend.arun(call)
        except CachifyBackendError as exc:
            self._retry_later(call, exc)
            raise
        return self._end_release(reply, call)

    def _begin_release(self) -> Call | None:
        """The release call to send, or None when there is nothing (more) to give back."""
        with self._lock:
            if self._state is not State.HELD:
                return None
            self._state = State.RELEASING
        if self._pid != os.getpid():
            # Inherited across fork: the slot is the parent's to give back, not this child's.
            self._state = State.RELEASED
            log.warning('py_cachify: %r was taken by process %d; not released from its child', self, self._pid)
            return None
        p, settings = self.pool, self._settings
        return release_call(settings.prefix, p.key, self.slot, p.max_size)

    def _end_release(self, reply: object, call: Call) -> bool:
        self._state = State.RELEASED
        self._released = flag(reply, call)
        if not self._released and not self.lost:
            self.lost = True
            log.warning(
                'py_cachify: the slot %s of pool %r had expired before it was released '
                '(held longer than slot_exp); another holder may have run alongside',
                self.slot,
                self.pool.key,
            )
        return self._released

    def _retry_later(self, call: Call, exc: CachifyBackendError) -> None:
        self._state = State.RELEASED
        if exc.transient:
            self._settings.backend.give_backs.add([call], self._expires_at)

    # -- keeping the slot -----------------------------------------------------------------

    def extend(self, seconds: float | None = None) -> bool:
        """Push the slot's expiry to `seconds` from now (default: the pool's slot_exp).

        One round trip. Returns False if the slot was already lost (expired); it is not
        taken back then. Raises RuntimeError once released.
        """
        call, lifetime = self._extend_call(seconds)
        return self._extended(flag(self._settings.backend.run(call), call), lifetime)

    async def aextend(self, seconds: float | None = None) -> bool:
        """`extend` for asyncio."""
        call, lifetime = self._extend_call(seconds)
        return self._extended(flag(await self._settings.backend.arun(call), call), lifetime)

    def _renew(self) -> bool:
        """One auto-renewal: a release under way makes it moot, not an error."""
        try:
            return self.extend()
        except RuntimeError:
            if self.held:
                raise
            return True

    async def _arenew(self) -> bool:
        """`_renew` for asyncio."""
        try:
            return await self.aextend()
        except RuntimeError:
            if self.held:
                raise
            return True

    def _extend_call(self, seconds: float | None) -> tuple[Call, SlotExp]:
        lifetime = self.pool._lifetime(self._settings) if seconds is None else validate_seconds(seconds, 'seconds')
        if self._state is not State.HELD:
            raise RuntimeError(f'{self!r} is released: there is no slot to extend')
        return extend_call(self._settings.prefix, self.pool.key, self.slot, ttl_ms(lifetime)), lifetime

    def _extended(self, kept: bool, lifetime: SlotExp) -> bool:
        if kept:
            self._expires_at = _deadline(lifetime)
        else:
            self.lost = True
        return kept

    def _mark_lost(self) -> None:
        self.lost = True

    # -- with / async with ------------------------------------------------------------------

    def __enter__(self) -> Lease:
        push(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pop(self)
        self.release()

    async def __aenter__(self) -> Lease:
        push(self)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pop(self)
        await self.arelease()


def _deadline(lifetime: SlotExp) -> float | None:
    """When (time.monotonic) a slot of `lifetime` seconds taken now has surely expired."""
    return None if lifetime is None else time.monotonic() + lifetime


# -- the leases each context holds -----------------------------------------------------------

_held: ContextVar[tuple[Lease, ...]] = ContextVar('py_cachify.held', default=())


def push(lease: Lease) -> None:
    """Make `lease` the innermost held lease of this context."""
    # Leases released from another context are dropped here, so a stack never keeps them.
    _held.set((*(x for x in _held.get() if x.held), lease))


def pop(lease: Lease) -> None:
    """Forget `lease` in this context (no-op if it was entered in another one)."""
    stack = _held.get()
    if lease in stack:
        _held.set(tuple(x for x in stack if x is not lease))


def held(owner: pool, among: list[Lease] | None = None) -> Lease | None:
    """The innermost lease of `owner` this context holds (and that is in `among`), if any."""
    for lease in reversed(_held.get()):
        if lease.pool is owner and lease.held and (among is None or lease in among):
            return lease
    return None


# -- finishing a give-back whatever the caller's cancellations ------------------------------

_finishing: set[asyncio.Future[Any]] = set()  # strong references: the loop keeps only weak ones


async def survive_cancellation(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to its end even if the caller is cancelled meanwhile (any number of times).

    A cancellation that arrived is raised once `work` is done, so it is never swallowed.
    """
    task = asyncio.ensure_future(work)
    _finishing.add(task)
    task.add_done_callback(_finishing.discard)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise  # `work` itself was cancelled (the loop is shutting down)
            cancelled = True
        except BaseException:
            if cancelled:
                raise asyncio.CancelledError from None
            raise
    if cancelled:
        raise asyncio.CancelledError
    return result
