"""Distributed locks (`lock`) and `once`: a lock is a pool of one, with the pool's machinery.

The lock `k` is the pool `lock:k` of `max_size=1` (Redis keys `{<prefix>lock:k}:slots` and
friends, wake-up channel `{<prefix>lock:k}:released`). Each holder takes a slot of its own
(a random token), so a release or an extend acts on the caller's own hold only, expiry is
read by Redis's clock, and a waiter is woken by the release's message, with
`lock_poll_interval` as its fallback poll.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar, cast, overload

from . import renewal
from .cacheops import lock_break_call, lock_pool_name
from .decorators import _KeyTemplate, is_async
from .errors import CachifyLockError, CachifyPoolFullError
from .lease import Lease
from .ops import UNSET, Call, SlotExp, UnsetType, flag, validate_slot_exp, validate_timeout
from .pool import pool
from .settings import Settings, current
from .steps import Step, Wait

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ['AsyncLockWrappedF', 'SyncLockWrappedF', 'WrappedFunctionLock', 'lock', 'once']

P = ParamSpec('P')
Q = ParamSpec('Q')
R = TypeVar('R')
S = TypeVar('S')


class _LockPool(pool):
    """A lock's pool of one: it lives `default_lock_expiration` unless given `exp`, and its
    waiters look again every `lock_poll_interval` at least (a lost message costs no more)."""

    def _lifetime(self, settings: Settings) -> SlotExp:
        return settings.default_lock_exp if isinstance(self._slot_exp, UnsetType) else self._slot_exp

    def _acquire_flow(self, settings: Settings, slot: str) -> Generator[Step, object, None]:
        flow = super()._acquire_flow(settings, slot)
        poll = settings.lock_poll_interval
        step = next(flow)
        while True:
            if isinstance(step, Wait) and step.seconds > poll:
                step = Wait(poll, step.unheard)
            reply = yield step
            try:
                step = flow.send(reply)
            except StopIteration:
                return


class lock:
    """A distributed lock on `key`: `with lock(key):` / `async with lock(key):`, or a decorator.

    Raises `CachifyLockError` when the lock is held by someone else: at once with
    `nowait=True` (the default; `timeout` is then ignored, as in py-cachify 3.1.0), or after
    `timeout` seconds of waiting with `nowait=False` (`timeout=None` waits as long as it
    takes). A waiter is woken by the release itself, through the pools' pub/sub wake-ups.

    The lock expires `exp` seconds after it was taken, by Redis's clock (default
    `default_lock_expiration` of `init_cachify`, 30 s; None = never). It is owned: each
    holder has a token, and `release()` / `extend()` act on the caller's own hold only. A
    hold released after it expired removes nothing of the next holder's, and is logged.
    `auto_renew=True` extends it in the background while held, and reports a loss to
    `on_lost(key)`.

    As a decorator, `key` may be a format string over the function's arguments
    ('user-{user_id}'); each call holds the lock '<formatted key>-lock', and the function
    gets `is_locked(*args, **kwargs)` and `release(*args, **kwargs)`; the latter frees that
    call's lock whoever holds it, like py-cachify 3.1.0's.

    Raises `TypeError` / `ValueError` for bad arguments, before anything reaches Redis.
    """

    def __init__(
        self,
        key: str,
        nowait: bool = True,
        timeout: float | None = None,
        exp: SlotExp | UnsetType = UNSET,
        *,
        auto_renew: bool = False,
        on_lost: renewal.OnLost | None = None,
        settings: Settings | None = None,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise TypeError(f'lock key must be a non-empty str, got {key!r}')
        validate_timeout(timeout)
        self._key = key
        self._nowait = nowait
        self._timeout = timeout
        self._exp = validate_slot_exp(exp, 'exp')
        self._auto_renew = auto_renew
        self._on_lost = on_lost
        self._settings = settings
        self._pool = _LockPool(
            lock_pool_name(key),
            1,
            self._exp,
            nowait=nowait,
            timeout=None if nowait else timeout,
            auto_renew=auto_renew,
            on_lost=on_lost,
            settings=settings,
        )

    @property
    def key(self) -> str:
        """The lock's key, without the prefix."""
        return self._key

    def __repr__(self) -> str:
        return f'lock(key={self._key!r}, nowait={self._nowait}, timeout={self._timeout!r}, exp={self._exp!r})'

    # -- taking and giving back --------------------------------------------------------------

    def acquire(self) -> Lease:
        """Take the lock and return the hold as a `Lease` (release it from anywhere).

        Raises `CachifyLockError` when it is held elsewhere, `CachifyBackendError` when Redis fails.
        """
        try:
            return self._pool.acquire()
        except CachifyPoolFullError:
            raise self._locked() from None

    async def aacquire(self) -> Lease:
        """`acquire` for asyncio."""
        try:
            return await self._pool.aacquire()
        except CachifyPoolFullError:
            raise self._locked() from None

    def __enter__(self) -> Self:
        self._pool._enter(self.acquire())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        lease = self._taken()
        if lease is not None:  # None: released inside the block already
            lease.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> Self:
        self._pool._enter(await self.aacquire())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        lease = self._taken()
        if lease is not None:
            await lease.__aexit__(exc_type, exc, tb)

    def release(self) -> bool:
        """Give back this object's innermost hold (taken by `with`); no-op if none is left.

        Returns False when there was none, or it had expired (logged). Only the caller's own
        hold is given back; `force_release()` frees the lock whoever holds it.
        """
        lease = self._taken()
        if lease is None:
            return False
        lease.__exit__(None, None, None)
        return not lease.lost

    async def arelease(self) -> bool:
        """`release` for asyncio."""
        lease = self._taken()
        if lease is None:
            return False
        await lease.__aexit__(None, None, None)
        return not lease.lost

    def _taken(self) -> Lease | None:
        try:
            return self._pool._exit()
        except RuntimeError:  # nothing of this object's is held any more
            return None

    def force_release(self) -> bool:
        """Free the lock whoever holds it, and wake a waiter (py-cachify 3.1.0's `release`).

        Returns whether it was held. The holder is not told; its own release later finds
        nothing to give back and logs so.
        """
        backend, call = self._break_call()
        return flag(backend.run(call), call)

    async def aforce_release(self) -> bool:
        """`force_release` for asyncio."""
        backend, call = self._break_call()
        return flag(await backend.arun(call), call)

    def _break_call(self) -> tuple[Any, Call]:
        settings = self._settings or current()
        return settings.backend, lock_break_call(settings.prefix, self._key)

    # -- looking and extending ---------------------------------------------------------------

    def is_locked(self) -> bool:
        """Whether anyone holds the lock now (an expired hold does not count). One round trip."""
        return self._pool.size() > 0

    async def is_alocked(self) -> bool:
        """`is_locked` for asyncio."""
        return await self._pool.asize() > 0

    def extend(self, seconds: float | None = None) -> bool:
        """Push this object's innermost hold's expiry to `seconds` from now (default: `exp`).

        Returns False if the hold was already lost (expired). Raises RuntimeError when not held.
        """
        return self._pool.extend(seconds)

    async def aextend(self, seconds: float | None = None) -> bool:
        """`extend` for asyncio."""
        return await self._pool.aextend(seconds)

    def _locked(self) -> CachifyLockError:
        return CachifyLockError(f'{self._key} is already locked!', self._key)

    # -- as a decorator ----------------------------------------------------------------------

    @overload
    def __call__(self, func: Callable[P, Awaitable[R]], /) -> AsyncLockWrappedF[P, R]: ...  # type: ignore[overload-overlap]

    @overload
    def __call__(self, func: Callable[P, R], /) -> SyncLockWrappedF[P, R]: ...

    def __call__(self, func: Callable[..., Any], /) -> Any:
        """Hold the lock '<key formatted from the call's arguments>-lock' around each call."""
        template = _KeyTemplate(self._key, func)

        def lock_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> lock:
            return lock(
                template.format(args, kwargs) + '-lock',
                self._nowait,
                self._timeout,
                self._exp,
                auto_renew=self._auto_renew,
                on_lost=self._on_lost,
                settings=self._settings,
            )

        if is_async(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with lock_for(args, kwargs):
                    return await func(*args, **kwargs)

            return _attach(async_wrapper, func, lock_for, asynchronous=True)

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            with lock_for(args, kwargs):
                return func(*args, **kwargs)

        return _attach(sync_wrapper, func, lock_for, asynchronous=False)


def once(
    key: str, raise_on_locked: bool = False, return_on_locked: Any = None, *, settings: Settings | None = None
) -> WrappedFunctionLock:
    """Run the decorated function at most once at a time per key, across processes.

    `key` may be a format string over the function's arguments; each call holds the lock
    '<formatted key>-once' while it runs. A call that finds it held returns
    `return_on_locked` (default None), or raises `CachifyLockError` with `raise_on_locked=True`.
    The function gets `is_locked(*args, **kwargs)` and `release(*args, **kwargs)` (frees the
    call's lock whoever holds it).
    """

    def decorate(func: Callable[..., Any]) -> Any:
        template = _KeyTemplate(key, func)

        def lock_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> lock:
            return lock(template.format(args, kwargs) + '-once', settings=settings)

        if is_async(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    lease = await lock_for(args, kwargs).aacquire()
                except CachifyLockError:
                    if raise_on_locked:
                        raise
                    return return_on_locked
                async with lease:
                    return await func(*args, **kwargs)

            return _attach(async_wrapper, func, lock_for, asynchronous=True)

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                lease = lock_for(args, kwargs).acquire()
            except CachifyLockError:
                if raise_on_locked:
                    raise
                return return_on_locked
            with lease:
                return func(*args, **kwargs)

        return _attach(sync_wrapper, func, lock_for, asynchronous=False)

    return cast(WrappedFunctionLock, decorate)


def _attach(
    wrapper: Callable[..., Any],
    func: Callable[..., Any],
    lock_for: Callable[[tuple[Any, ...], dict[str, Any]], lock],
    *,
    asynchronous: bool,
) -> Callable[..., Any]:
    """Give `wrapper` `is_locked(*args, **kwargs)` and `release(*args, **kwargs)`.

    As in py-cachify 3.1.0, a decorated function that itself has them (a stack of
    decorators) is asked too: locked if either is, and released both.
    """
    inner_is_locked = getattr(func, 'is_locked', None)
    inner_release = getattr(func, 'release', None)

    if asynchronous:

        async def ais_locked(*args: Any, **kwargs: Any) -> bool:
            if await lock_for(args, kwargs).is_alocked():
                return True
            return bool(inner_is_locked is not None and await inner_is_locked(*args, **kwargs))

        async def arelease(*args: Any, **kwargs: Any) -> None:
            await lock_for(args, kwargs).aforce_release()
            if inner_release is not None:
                await inner_release(*args, **kwargs)

        wrapper.is_locked = ais_locked  # type: ignore[attr-defined]
        wrapper.release = arelease  # type: ignore[attr-defined]
        return wrapper

    def is_locked(*args: Any, **kwargs: Any) -> bool:
        if lock_for(args, kwargs).is_locked():
            return True
        return bool(inner_is_locked is not None and inner_is_locked(*args, **kwargs))

    def release(*args: Any, **kwargs: Any) -> None:
        lock_for(args, kwargs).force_release()
        if inner_release is not None:
            inner_release(*args, **kwargs)

    wrapper.is_locked = is_locked  # type: ignore[attr-defined]
    wrapper.release = release  # type: ignore[attr-defined]
    return wrapper


# -- the types of decorated functions (py-cachify 3.1.0's names) ---------------------------------


class SyncLockWrappedF(Protocol[P, R]):
    """A sync function wrapped by `lock` or `once`."""

    __wrapped__: Callable[P, R]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def is_locked(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Whether the lock this call would take is held now."""
        ...

    def release(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Free the lock this call would take, whoever holds it."""
        ...

    @overload
    def __get__(self, instance: None, owner: type[Any], /) -> Self: ...

    @overload
    def __get__(self: SyncLockWrappedF[Concatenate[S, Q], R], instance: S, owner: type[Any], /) -> Callable[Q, R]: ...


class AsyncLockWrappedF(Protocol[P, R]):
    """An async function wrapped by `lock` or `once`."""

    __wrapped__: Callable[P, Awaitable[R]]

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    async def is_locked(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Whether the lock this call would take is held now."""
        ...

    async def release(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Free the lock this call would take, whoever holds it."""
        ...

    @overload
    def __get__(self, instance: None, owner: type[Any], /) -> Self: ...

    @overload
    def __get__(
        self: AsyncLockWrappedF[Concatenate[S, Q], R], instance: S, owner: type[Any], /
    ) -> Callable[Q, Coroutine[Any, Any, R]]: ...


class WrappedFunctionLock(Protocol):
    """What `once(...)` returns: a decorator for a sync or an async function."""

    @overload
    def __call__(self, func: Callable[P, Awaitable[R]], /) -> AsyncLockWrappedF[P, R]: ...  # type: ignore[overload-overlap]

    @overload
    def __call__(self, func: Callable[P, R], /) -> SyncLockWrappedF[P, R]: ...
