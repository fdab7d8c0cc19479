"""The pool: at most `max_size` holders at once, as `with` / `async with`, across processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Generator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypedDict

from . import renewal
from .errors import CachifyPoolFullError
from .ops import (
    FALLBACK_POLL,
    UNSET,
    Call,
    SlotExp,
    UnsetType,
    acquire_call,
    attempt,
    count,
    extend_call,
    flag,
    holders,
    holders_call,
    leave_call,
    new_slot_id,
    pool_keys,
    purge_call,
    release_call,
    size_call,
    ttl_ms,
    validate_key,
    validate_max_size,
    validate_seconds,
    validate_slot_exp,
    validate_timeout,
)
from .settings import Settings, current

if TYPE_CHECKING:
    from typing_extensions import Self

    from .backends import Backend
    from .decorators import PooledDecorator

__all__ = ['PoolOptions', 'pool']

log = logging.getLogger('py_cachify')


class PoolOptions(TypedDict, total=False):
    """How a pool waits and keeps its slots; every maker of pools takes these keywords."""

    nowait: bool
    timeout: float | None
    fair: bool
    auto_renew: bool
    on_lost: renewal.OnLost | None


@dataclass(frozen=True)
class _Wait:
    seconds: float


_LISTEN = object()  # the flow asks to be woken by releases from now on
_Step = Call | _Wait | object


@dataclass
class _Lease:
    """One held slot, and its renewer while auto-renewal runs."""

    slot: str
    stop: Callable[[], object] | None = None  # ends auto-renewal


class pool:
    """A distributed concurrency pool: no more than `max_size` holders of `key` at a time.

    `with pool(...)` / `async with pool(...)` takes a slot and gives that slot back on exit,
    also when the body raises or is cancelled. When the pool is full it raises
    `CachifyPoolFullError` at once (`nowait=True`, the default), or waits for a release up
    to `timeout` seconds (`nowait=False`; `timeout=None` waits as long as it takes). With
    `fair=True` waiters get slots in the order they arrived.

    A slot past its `slot_exp` (seconds; None = never; default `default_pool_slot_expiration`)
    no longer counts; the code holding it is not interrupted. `extend()` pushes the held
    slot's expiry out; `auto_renew=True` does it in the background while the body runs and
    reports a lost slot to `on_lost(key)` (or a logged warning).

    One pool object may be shared by threads and tasks, and entered again inside its own
    `with`: every entry takes a slot of its own and its exit releases exactly that slot.

    Raises `TypeError` / `ValueError` for bad arguments, before anything reaches Redis.
    """

    def __init__(
        self,
        key: str,
        max_size: int,
        slot_exp: SlotExp | UnsetType = UNSET,
        *,
        nowait: bool = True,
        timeout: float | None = None,
        fair: bool = False,
        auto_renew: bool = False,
        on_lost: renewal.OnLost | None = None,
        settings: Settings | None = None,
    ) -> None:
        self._key = validate_key(key)
        self._max_size = validate_max_size(max_size)
        self._slot_exp = validate_slot_exp(slot_exp)
        self._timeout = validate_timeout(timeout)
        if nowait and timeout is not None:
            raise ValueError(f'timeout={timeout!r} only applies with nowait=False')
        self._nowait = nowait
        self._fair = fair
        self._auto_renew = auto_renew
        self._on_lost = on_lost
        self._settings = settings
        # Slots this context holds, innermost last: nested `with` in one task, and tasks
        # and threads sharing this object, each release only their own slot.
        self._held: ContextVar[tuple[_Lease, ...]] = ContextVar(f'py_cachify.pool:{key}', default=())

    @property
    def key(self) -> str:
        """The pool's key, without the prefix."""
        return self._key

    @property
    def max_size(self) -> int:
        """How many holders the pool admits at once."""
        return self._max_size

    def __repr__(self) -> str:
        return f'pool(key={self._key!r}, max_size={self._max_size}, slot_exp={self._slot_exp!r})'

    # -- with / async with ------------------------------------------------------------

    def __enter__(self) -> Self:
        self._held.set((*self._held.get(), self._take()))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._give(self._innermost())
        finally:
            self._held.set(self._held.get()[:-1])

    async def __aenter__(self) -> Self:
        self._held.set((*self._held.get(), await self._atake()))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # A cancellation arriving now must not leave the slot held until it expires.
        try:
            await asyncio.shield(self._agive(self._innermost()))
        finally:
            self._held.set(self._held.get()[:-1])

    # -- the held slot ----------------------------------------------------------------

    def extend(self, seconds: float | None = None) -> bool:
        """Push the innermost held slot's expiry to `seconds` from now (default: slot_exp).

        One round trip. Returns False if the slot was already lost (expired); it is not
        taken back then. Raises RuntimeError outside `with`.
        """
        backend, call = self._extend_call(self._innermost().slot, seconds)
        return flag(backend.run(call), call)

    async def aextend(self, seconds: float | None = None) -> bool:
        """Push the innermost held slot's expiry out; see `extend`."""
        backend, call = self._extend_call(self._innermost().slot, seconds)
        return flag(await backend.arun(call), call)

    # -- reading the pool -------------------------------------------------------------

    def size(self) -> int:
        """How many slots are held now (expired ones excluded). One round trip."""
        backend, call = self._call(size_call)
        return count(backend.run(call), call)

    async def asize(self) -> int:
        """How many slots are held now (expired ones excluded). One round trip."""
        backend, call = self._call(size_call)
        return count(await backend.arun(call), call)

    def free(self) -> int:
        """How many slots are free now. One round trip."""
        return max(0, self._max_size - self.size())

    async def afree(self) -> int:
        """How many slots are free now. One round trip."""
        return max(0, self._max_size - await self.asize())

    def holders(self) -> dict[str, float | None]:
        """The live slot ids and the seconds each has left (None: never expires), soonest first."""
        backend, call = self._call(holders_call)
        return holders(backend.run(call), call)

    async def aholders(self) -> dict[str, float | None]:
        """The live slot ids and the seconds each has left; see `holders`."""
        backend, call = self._call(holders_call)
        return holders(await backend.arun(call), call)

    def purge(self) -> int:
        """Drop expired slots now (acquire does it anyway); returns how many were dropped."""
        backend, call = self._call(purge_call)
        return count(backend.run(call), call)

    async def apurge(self) -> int:
        """Drop expired slots now (acquire does it anyway); returns how many were dropped."""
        backend, call = self._call(purge_call)
        return count(await backend.arun(call), call)

    def pooled(self, on_full: Callable[..., Any] | None = None, raise_on_full: bool = False) -> PooledDecorator:
        """Decorate a function so each call holds a slot of this very pool.

        When the pool is full (after waiting, if the pool waits): raise
        `CachifyPoolFullError` if `raise_on_full`, else return `on_full(*args, **kwargs)`
        (awaited if awaitable) if given, else return None.
        """
        from .decorators import decorator

        return decorator(lambda args, kwargs: self, on_full=on_full, raise_on_full=raise_on_full)

    # -- taking and giving a slot: one flow, driven by a sync and an async shell -------

    def _take(self) -> _Lease:
        settings = self._settings or current()
        backend, slot = settings.backend, new_slot_id()
        channel = pool_keys(settings.prefix + self._key).channel
        woken: threading.Event | None = None  # made only if the pool is full: most takes never wait
        flow = self._acquire_flow(settings, slot)
        try:
            step = next(flow)
            while True:
                if step is _LISTEN:
                    woken = threading.Event()
                    backend.wakeups.add(channel, slot, woken.set)
                    backend.listen(channel)
                    reply = None
                elif isinstance(step, _Wait):
                    assert woken is not None
                    woken.wait(step.seconds)
                    woken.clear()  # before the next try: a release after it sets it again
                    reply = None
                else:
                    assert isinstance(step, Call)
                    reply = backend.run(step)
                step = flow.send(reply)
        except StopIteration:
            return self._start_renewal(_Lease(slot))
        except CachifyPoolFullError:
            raise
        except BaseException:
            for call in self._cleanup_calls(settings, slot):
                with contextlib.suppress(Exception):
                    backend.run(call)
            raise
        finally:
            if woken is not None:
                backend.wakeups.discard(channel, slot)

    async def _atake(self) -> _Lease:
        settings = self._settings or current()
        backend, slot = settings.backend, new_slot_id()
        channel = pool_keys(settings.prefix + self._key).channel
        woken: asyncio.Event | None = None
        flow = self._acquire_flow(settings, slot)
        try:
            step = next(flow)
            while True:
                if step is _LISTEN:
                    woken = asyncio.Event()
                    wake = partial(asyncio.get_running_loop().call_soon_threadsafe, woken.set)
                    backend.wakeups.add(channel, slot, wake)
                    await backend.alisten(channel)
                    reply = None
                elif isinstance(step, _Wait):
                    assert woken is not None
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(woken.wait(), step.seconds)
                    woken.clear()
                    reply = None
                else:
                    assert isinstance(step, Call)
                    reply = await backend.arun(step)
                step = flow.send(reply)
        except StopIteration:
            return self._start_arenewal(_Lease(slot))
        except CachifyPoolFullError:
            raise
        except BaseException:
            # Cancelled or failed mid-call: the acquire may have landed. Give the slot back
            # now rather than leave it held by nobody until it expires.
            for call in self._cleanup_calls(settings, slot):
                with contextlib.suppress(Exception):
                    await asyncio.shield(backend.arun(call))
            raise
        finally:
            if woken is not None:
                backend.wakeups.discard(channel, slot)

    def _acquire_flow(self, settings: Settings, slot: str) -> Generator[_Step, object, None]:
        """The acquire rules, free of I/O: yields calls to run and waits; returns on success."""
        queue = self._fair and not self._nowait
        call = acquire_call(settings.prefix, self._key, slot, self._max_size, ttl_ms(self._lifetime(settings)), queue)
        result = attempt((yield call), call)
        if result.acquired:
            return
        if self._nowait:
            raise CachifyPoolFullError(self._key, self._max_size)
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        # Listen before the next try: a release between that try and the wait still wakes us.
        yield _LISTEN
        while True:
            result = attempt((yield call), call)
            if result.acquired:
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                if queue:
                    yield leave_call(settings.prefix, self._key, slot)
                raise CachifyPoolFullError(self._key, self._max_size)
            # Woken by a release; else by the nearest expiry (expiry sends no message); the
            # fallback poll only guards against a lost message.
            expiry = None if result.next_expiry is None else result.next_expiry + 0.001
            yield _Wait(min(x for x in (left, expiry, FALLBACK_POLL) if x is not None))

    def _cleanup_calls(self, settings: Settings, slot: str) -> tuple[Call, ...]:
        """What gives back a slot whose acquire may or may not have landed (best effort)."""
        release = release_call(settings.prefix, self._key, slot, self._max_size)
        return (release, leave_call(settings.prefix, self._key, slot)) if self._fair else (release,)

    def _give(self, lease: _Lease) -> bool:
        if lease.stop is not None:
            lease.stop()
        backend, call = self._call(release_call, lease.slot, self._max_size)
        return self._report(flag(backend.run(call), call), lease)

    async def _agive(self, lease: _Lease) -> bool:
        if lease.stop is not None:
            lease.stop()
        backend, call = self._call(release_call, lease.slot, self._max_size)
        return self._report(flag(await backend.arun(call), call), lease)

    def _report(self, released: bool, lease: _Lease) -> bool:
        if not released:
            log.warning(
                'py_cachify: the slot %s of pool %r had expired before it was released '
                '(held longer than slot_exp); another holder may have run alongside',
                lease.slot,
                self._key,
            )
        return released

    # -- auto-renewal -------------------------------------------------------------------

    def _start_renewal(self, lease: _Lease) -> _Lease:
        every = self._renew_every()
        if every is not None:
            lease.stop = renewal.in_thread(every, partial(self._extend_slot, lease.slot), self._key, self._on_lost)
        return lease

    def _start_arenewal(self, lease: _Lease) -> _Lease:
        every = self._renew_every()
        if every is not None:
            lease.stop = renewal.in_task(every, partial(self._aextend_slot, lease.slot), self._key, self._on_lost)
        return lease

    def _renew_every(self) -> float | None:
        slot_exp = self._lifetime(self._settings or current()) if self._auto_renew else None
        return None if slot_exp is None else slot_exp * renewal.EVERY

    # -- calls --------------------------------------------------------------------------

    def _extend_slot(self, slot: str) -> bool:
        backend, call = self._extend_call(slot, None)
        return flag(backend.run(call), call)

    async def _aextend_slot(self, slot: str) -> bool:
        backend, call = self._extend_call(slot, None)
        return flag(await backend.arun(call), call)

    def _extend_call(self, slot: str, seconds: float | None) -> tuple[Backend, Call]:
        settings = self._settings or current()
        slot_exp = self._lifetime(settings) if seconds is None else validate_seconds(seconds, 'seconds')
        return settings.backend, extend_call(settings.prefix, self._key, slot, ttl_ms(slot_exp))

    def _lifetime(self, settings: Settings) -> SlotExp:
        return settings.default_slot_exp if isinstance(self._slot_exp, UnsetType) else self._slot_exp

    def _call(self, make: Callable[..., Call], *args: str | int) -> tuple[Backend, Call]:
        settings = self._settings or current()
        return settings.backend, make(settings.prefix, self._key, *args)

    def _innermost(self) -> _Lease:
        held = self._held.get()
        if not held:
            raise RuntimeError(f'{self!r} is not held here: enter it first')
        return held[-1]
