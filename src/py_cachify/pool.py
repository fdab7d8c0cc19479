"""The pool: at most `max_size` holders at once, as `with` / `async with`, across processes."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypedDict, overload

from . import lease as leases
from . import renewal, steps
from .errors import CachifyBackendError, CachifyPoolFullError
from .lease import Lease, survive_cancellation
from .ops import (
    FALLBACK_POLL,
    HEARD_POLL,
    HOLDERS_LIMIT,
    PURGE_BATCH,
    UNSET,
    Call,
    SlotExp,
    UnsetType,
    acquire_call,
    attempt,
    count,
    holders,
    holders_call,
    leave_call,
    new_slot_id,
    pool_keys,
    purge_call,
    release_call,
    size_call,
    ttl_ms,
    validate_durability,
    validate_key,
    validate_max_size,
    validate_slot_exp,
    validate_timeout,
)
from .settings import Settings, current
from .steps import LISTEN, WATCH, Step, Wait

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from typing_extensions import Never, Self

    from .backends import Backend
    from .decorators import AsyncOnFullDecorator, OnFullDecorator, P, PooledDecorator, T

__all__ = ['PoolOptions', 'pool']


class PoolOptions(TypedDict, total=False):
    """How a pool waits, sheds and keeps its slots; every maker of pools takes these keywords."""

    nowait: bool
    timeout: float | None
    fair: bool
    shed_at: float | None
    auto_renew: bool
    on_lost: renewal.OnLost | None
    replicas: int
    replica_timeout: float


# -- the acquire rules as steps, free of I/O ----------------------------------------------------


# After an outage, give back an acquire that failed in transit once more this long after the
# first give-back was answered: a frozen server that wakes may run the old acquire late.
_RECHECK = 1.0


class pool:
    """A distributed concurrency pool: no more than `max_size` holders of `key` at a time.

    `with pool(...)` / `async with pool(...)` takes a slot and gives that slot back on exit,
    also when the body raises or is cancelled. `acquire()` / `aacquire()` return the slot as
    a `Lease` to release from anywhere. When the pool is full it raises
    `CachifyPoolFullError` at once (`nowait=True`, the default), or waits for a release up
    to `timeout` seconds (`nowait=False`; `timeout=None` waits as long as it takes). With
    `fair=True` (waiting pools only) waiters get slots in the order they arrived. Without
    it, a release wakes one waiter, the one that tried least recently, and holds the freed
    slot for it for up to 0.2 s (`RESERVE_MS`): meanwhile every other caller, `nowait` ones
    too, counts that slot as taken, so a caller that releases and at once acquires again
    does not take it back from under the waiter being woken.
    `shed_at=0.8` admits only while fewer than 80% of `max_size` slots are held, decided
    atomically inside the acquire: load shedding without a check-then-act race.

    A slot past its `slot_exp` (seconds; None = never; default `default_pool_slot_expiration`)
    no longer counts; the code holding it is not interrupted. `extend()` pushes the held
    slot's expiry out; `auto_renew=True` does it in the background while the body runs and
    reports a lost slot to `on_lost(key)` (or a logged warning).

    `replicas=N` (default 0: off) makes each acquire confirm, in the same round trip
    (EVALSHA + WAIT), that N replicas of the master have it before the body runs; when
    fewer acknowledged it within `replica_timeout` seconds (default 0.1), the slot is
    given back and `CachifyBackendError` names the shortfall. A failover then cannot
    forget a slot whose holder is running. Needs a Redis client (not the embedded store).

    One pool object may be shared by threads and tasks, and entered again inside its own
    `with`: every entry takes a slot of its own and its exit releases exactly that slot,
    even when the exit runs in another context than the entry.

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
        shed_at: float | None = None,
        auto_renew: bool = False,
        on_lost: renewal.OnLost | None = None,
        replicas: int = 0,
        replica_timeout: float = 0.1,
        settings: Settings | None = None,
    ) -> None:
        self._key = validate_key(key)
        self._max_size = validate_max_size(max_size)
        self._slot_exp = validate_slot_exp(slot_exp)
        self._timeout = validate_timeout(timeout)
        if nowait and timeout is not None:
            raise ValueError(f'timeout={timeout!r} only applies with nowait=False')
        if fair and nowait:
            raise ValueError('fair=True orders waiters, so it needs nowait=False')
        self._admit = _admission(self._max_size, shed_at)
        self._durable = validate_durability(replicas, replica_timeout)
        self._nowait = nowait
        self._fair = fair
        self._auto_renew = auto_renew
        self._on_lost = on_lost
        self._settings = settings
        # Leases taken by `with self`, for an exit that runs in another context than its entry
        # (a sync dependency of a web framework): empty whenever nothing is held.
        self._entered: list[Lease] = []

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

    # -- leases ---------------------------------------------------------------------------

    def acquire(self) -> Lease:
        """Take a slot and return it as a `Lease`; release it with `lease.release()` or `with lease`.

        Raises `CachifyPoolFullError` when the pool is (still) full, `CachifyBackendError`
        when Redis fails: an acquire that may have landed is then given back in the background.
        """
        settings = self._settings or current()
        backend, slot = settings.backend, new_slot_id()
        channel = pool_keys(settings.prefix + self._key).channel
        try:
            steps.run(self._acquire_flow(settings, slot), backend, channel, *self._wake_ups(backend, channel, slot))
        except CachifyPoolFullError:
            raise
        except BaseException as exc:
            calls = self._give_back_calls(settings, slot)
            for i, call in enumerate(calls):
                if _transient(exc):
                    backend.give_backs.add(calls[i:], self._expiry_from_now(settings), recheck=_RECHECK)
                    break
                try:
                    backend.run(call)
                except CachifyBackendError as failed:
                    exc = failed
            raise
        return self._held(settings, slot, renewal.ThreadRenewer)

    async def aacquire(self) -> Lease:
        """`acquire` for asyncio. A cancelled acquire gives back what it may have taken."""
        settings = self._settings or current()
        backend, slot = settings.backend, new_slot_id()
        channel = pool_keys(settings.prefix + self._key).channel
        try:
            flow = self._acquire_flow(settings, slot)
            await steps.arun(flow, backend, channel, *self._wake_ups(backend, channel, slot))
        except CachifyPoolFullError:
            raise
        except BaseException as exc:
            # Cancelled or failed mid-call: the acquire may have landed. Give the slot back
            # (and leave the queue) now, whatever further cancellations arrive meanwhile.
            await survive_cancellation(self._agive_back(exc, settings, slot))
            raise
        return self._held(settings, slot, renewal.TaskRenewer)

    @staticmethod
    def _wake_ups(backend: Backend, channel: str, slot: str) -> tuple[steps.Register, Callable[[], None]]:
        """How a waiter for `slot` registers its wake-up, and forgets it."""
        return partial(backend.wakeups.add, channel, slot), partial(backend.wakeups.discard, channel, slot)

    async def _agive_back(self, exc: BaseException, settings: Settings, slot: str) -> None:
        calls = self._give_back_calls(settings, slot)
        for i, call in enumerate(calls):
            if _transient(exc):
                settings.backend.give_backs.add(calls[i:], self._expiry_from_now(settings), recheck=_RECHECK)
                return
            try:
                await settings.backend.arun(call)
            except CachifyBackendError as failed:
                exc = failed

    def _acquire_flow(self, settings: Settings, slot: str) -> Generator[Step, object, None]:
        """The acquire rules, free of I/O: yields calls to run and waits; returns on success."""
        queue = self._fair and not self._nowait
        ttl = ttl_ms(self._lifetime(settings))
        call = acquire_call(
            settings.prefix, self._key, slot, self._admit, ttl, queue, self._durable, wait=not self._nowait
        )
        if not self._nowait:
            # Registered before the first try: a release can name this waiter only once that
            # try has given it a lease, and the message then finds it registered (or, if the
            # channel is not subscribed yet, the confirmation wakes it). So no second try is
            # needed before waiting, and registering alone subscribes nothing.
            yield WATCH
        result = attempt((yield call), call)
        if result.acquired:
            return
        if self._nowait:
            raise CachifyPoolFullError(self._key, self._max_size)
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        yield LISTEN
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                # Every waiter leaves: a fair one's place moves those behind it up, and one out
                # of the queue may have been named for a slot it will not take now.
                yield leave_call(settings.prefix, self._key, slot)
                raise CachifyPoolFullError(self._key, self._max_size)
            # Woken by a release; else by the nearest expiry (expiry sends no message). The
            # fallback poll renews the waiter's lease and guards against a lost message: a
            # fair waiter polls every FALLBACK_POLL, to keep its short lease; one out of the
            # queue every HEARD_POLL while a subscription hears the channel, else as often.
            expiry = None if result.next_expiry is None else result.next_expiry + 0.001
            bounds = (left, expiry, FALLBACK_POLL if queue else HEARD_POLL)
            yield Wait(min(x for x in bounds if x is not None), None if queue else FALLBACK_POLL)
            result = attempt((yield call), call)
            if result.acquired:
                return

    def _give_back_calls(self, settings: Settings, slot: str) -> list[Call]:
        """What gives back a slot whose acquire may or may not have landed."""
        release = release_call(settings.prefix, self._key, slot, self._max_size)
        return [release] if self._nowait else [release, leave_call(settings.prefix, self._key, slot)]

    def _expiry_from_now(self, settings: Settings) -> float | None:
        lifetime = self._lifetime(settings)
        return None if lifetime is None else time.monotonic() + lifetime

    def _held(self, settings: Settings, slot: str, renewer: type[renewal.ThreadRenewer | renewal.TaskRenewer]) -> Lease:
        lifetime = self._lifetime(settings)
        lease = Lease(self, settings, slot, lifetime)
        if self._auto_renew and lifetime is not None:
            rule = renewal.Renewal(self._key, lifetime * renewal.EVERY, self._on_lost, lease._mark_lost)
            extend = lease._renew if renewer is renewal.ThreadRenewer else lease._arenew
            lease._renewer = renewer(rule, extend, owner=settings.backend)  # type: ignore[arg-type]
        return lease

    # -- with / async with ------------------------------------------------------------------

    def __enter__(self) -> Self:
        self._enter(self.acquire())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit().__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> Self:
        self._enter(await self.aacquire())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._exit().__aexit__(exc_type, exc, tb)

    def _enter(self, lease: Lease) -> None:
        self._entered.append(lease)
        leases.push(lease)

    def _exit(self) -> Lease:
        """The lease this exit gives back: this context's innermost, else the latest entered."""
        while True:
            lease = leases.held(self, among=self._entered) or self._latest()
            if lease is None:
                raise RuntimeError(f'{self!r} is not held here: enter it first')
            try:
                self._entered.remove(lease)
            except ValueError:  # another thread's exit took it first: pick again
                continue
            return lease

    def _lease(self) -> Lease:
        """The lease `extend()` acts on: this context's innermost, else the latest entered."""
        lease = leases.held(self) or self._latest()
        if lease is None:
            raise RuntimeError(f'{self!r} is not held here: enter it first')
        return lease

    def _latest(self) -> Lease | None:
        try:
            return self._entered[-1]
        except IndexError:  # emptied by another thread's exit
            return None

    # -- the held slot ----------------------------------------------------------------------

    def extend(self, seconds: float | None = None) -> bool:
        """Push the innermost held slot's expiry to `seconds` from now (default: slot_exp).

        One round trip. Returns False if the slot was already lost (expired); it is not
        taken back then. Raises RuntimeError when this pool is not held.
        """
        return self._lease().extend(seconds)

    async def aextend(self, seconds: float | None = None) -> bool:
        """Push the innermost held slot's expiry out; see `extend`."""
        return await self._lease().aextend(seconds)

    # -- reading the pool -------------------------------------------------------------------

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

    def holders(self, limit: int = HOLDERS_LIMIT) -> dict[str, float | None]:
        """The live slot ids and the seconds each has left (None: never expires), soonest first.

        At most `limit` (default 100) of them: the ones that expire soonest, a never-expiring
        slot last. The limit bounds the work of this one call however large the pool;
        `size()` counts them all, and a larger `limit` lists more. Raises TypeError /
        ValueError if `limit` is not an int >= 1.
        """
        backend, call = self._call(holders_call, limit)
        return holders(backend.run(call), call)

    async def aholders(self, limit: int = HOLDERS_LIMIT) -> dict[str, float | None]:
        """The live slot ids and the seconds each has left; see `holders`."""
        backend, call = self._call(holders_call, limit)
        return holders(await backend.arun(call), call)

    def purge(self) -> int:
        """Drop expired slots now (acquires drop them too, 100 a call); returns how many were dropped.

        Drains in calls of at most PURGE_BATCH (500) slots each, so a backlog of any size never
        holds Redis up for long; a batch that comes back short means none is left.
        """
        backend, call = self._call(purge_call)
        total = 0
        while (dropped := count(backend.run(call), call)) == PURGE_BATCH:
            total += dropped
        return total + dropped

    async def apurge(self) -> int:
        """Drop expired slots now, in batches; see `purge`."""
        backend, call = self._call(purge_call)
        total = 0
        while (dropped := count(await backend.arun(call), call)) == PURGE_BATCH:
            total += dropped
        return total + dropped

    # The result's type follows on_full and raise_on_full, as for `py_cachify.pooled`.
    @overload
    def pooled(self, on_full: Callable[..., Any] | None, raise_on_full: Literal[True]) -> PooledDecorator[Never]: ...

    @overload
    def pooled(
        self, on_full: Callable[..., Any] | None = None, *, raise_on_full: Literal[True]
    ) -> PooledDecorator[Never]: ...

    @overload
    def pooled(  # type: ignore[overload-overlap]
        self, on_full: Callable[P, Awaitable[T]], raise_on_full: bool = False
    ) -> AsyncOnFullDecorator[P, T]: ...

    @overload
    def pooled(self, on_full: Callable[P, T], raise_on_full: bool = False) -> OnFullDecorator[P, T]: ...

    @overload
    def pooled(self, on_full: None = None, raise_on_full: bool = False) -> PooledDecorator[None]: ...

    def pooled(self, on_full: Callable[..., Any] | None = None, raise_on_full: bool = False) -> Any:
        """Decorate a function so each call holds a slot of this very pool.

        When the pool is full (after waiting, if the pool waits): raise
        `CachifyPoolFullError` if `raise_on_full`, else return `on_full(*args, **kwargs)`
        (awaited if awaitable) if given, else return None. Inside, `extend()` works.
        """
        from .decorators import decorator

        return decorator(lambda args, kwargs: self, on_full=on_full, raise_on_full=raise_on_full)

    # -- calls ------------------------------------------------------------------------------

    def _lifetime(self, settings: Settings) -> SlotExp:
        return settings.default_slot_exp if isinstance(self._slot_exp, UnsetType) else self._slot_exp

    def _call(self, make: Callable[..., Call], *args: str | int) -> tuple[Backend, Call]:
        settings = self._settings or current()
        return settings.backend, make(settings.prefix, self._key, *args)


def _admission(max_size: int, shed_at: object) -> int:
    """How many holders an acquire admits: `max_size`, or fewer when shedding load early."""
    if shed_at is None:
        return max_size
    if isinstance(shed_at, bool) or not isinstance(shed_at, (int, float)):
        raise TypeError(f'shed_at must be a fraction of max_size (0 < shed_at <= 1) or None, got {shed_at!r}')
    if not 0 < shed_at <= 1:
        raise ValueError(f'shed_at must be a fraction of max_size (0 < shed_at <= 1), got {shed_at!r}')
    admit = math.floor(max_size * shed_at + 1e-9)  # 10 * 0.8 is 8 exactly, not 7.999...
    if admit < 1:
        raise ValueError(f'shed_at={shed_at!r} of max_size={max_size} admits nobody')
    return admit


def _transient(exc: BaseException) -> bool:
    """A store failure that may pass: what it left undone is retried in the background."""
    return isinstance(exc, CachifyBackendError) and exc.transient
