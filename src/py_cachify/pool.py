"""The pool: at most `max_size` holders at once, as `with` / `async with`, across processes."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .errors import CachifyPoolFullError
from .ops import (
    UNSET,
    Call,
    SlotExp,
    UnsetType,
    acquire_call,
    acquired,
    count,
    new_slot_id,
    purge_call,
    release_call,
    released,
    size_call,
    ttl_ms,
    validate_key,
    validate_max_size,
    validate_slot_exp,
)
from .settings import Settings, current

if TYPE_CHECKING:
    from typing_extensions import Self

    from .backends import Backend
    from .decorators import PooledDecorator

__all__ = ['pool']


class pool:
    """A distributed concurrency pool: no more than `max_size` holders of `key` at a time.

    `with pool(...)` / `async with pool(...)` takes a slot or raises `CachifyPoolFullError`,
    and gives that slot back on exit, also when the body raises or is cancelled. A slot
    past its `slot_exp` (seconds; None = never; default `default_pool_slot_expiration`) no
    longer counts; the code holding it is not interrupted.

    One pool object may be shared by threads and tasks, and entered again inside its own
    `with`: every entry takes a slot of its own and its exit releases exactly that slot.

    Raises `TypeError` / `ValueError` for a bad `key`, `max_size` or `slot_exp`, before
    anything reaches Redis.
    """

    def __init__(
        self,
        key: str,
        max_size: int,
        slot_exp: SlotExp | UnsetType = UNSET,
        *,
        settings: Settings | None = None,
    ) -> None:
        self._key = validate_key(key)
        self._max_size = validate_max_size(max_size)
        self._slot_exp = validate_slot_exp(slot_exp)
        self._settings = settings
        # Slots this context holds, innermost last: nested `with` in one task, and tasks
        # and threads sharing this object, each release only their own slot.
        self._held: ContextVar[tuple[str, ...]] = ContextVar(f'py_cachify.pool:{key}', default=())

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
        self._give(self._pop())

    async def __aenter__(self) -> Self:
        self._held.set((*self._held.get(), await self._atake()))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._agive(self._pop())

    # -- reading the pool -------------------------------------------------------------

    def size(self) -> int:
        """How many slots are held now (expired ones excluded)."""
        backend, call = self._plain_call(size_call)
        return count(backend.run(call), call)

    async def asize(self) -> int:
        """How many slots are held now (expired ones excluded)."""
        backend, call = self._plain_call(size_call)
        return count(await backend.arun(call), call)

    def purge(self) -> int:
        """Drop expired slots now (acquire does it anyway); returns how many were dropped."""
        backend, call = self._plain_call(purge_call)
        return count(backend.run(call), call)

    async def apurge(self) -> int:
        """Drop expired slots now (acquire does it anyway); returns how many were dropped."""
        backend, call = self._plain_call(purge_call)
        return count(await backend.arun(call), call)

    def pooled(self, on_full: Callable[..., Any] | None = None, raise_on_full: bool = False) -> PooledDecorator:
        """Decorate a function so each call holds a slot of this very pool.

        When the pool is full: raise `CachifyPoolFullError` if `raise_on_full`, else return
        `on_full(*args, **kwargs)` (awaited if awaitable) if given, else return None.
        """
        from .decorators import decorator

        return decorator(lambda args, kwargs: self, on_full=on_full, raise_on_full=raise_on_full)

    # -- the one core both shells share: build the call, run it, read the reply ------
    # `_take` / `_give` hold a slot without touching the context's stack; the decorator
    # uses them directly.

    def _take(self) -> str:
        backend, call = self._acquire_call()
        return self._admitted(backend.run(call), call)

    async def _atake(self) -> str:
        backend, call = self._acquire_call()
        return self._admitted(await backend.arun(call), call)

    def _give(self, slot: str) -> bool:
        backend, call = self._plain_call(release_call, slot)
        return released(backend.run(call), call)

    async def _agive(self, slot: str) -> bool:
        backend, call = self._plain_call(release_call, slot)
        return released(await backend.arun(call), call)

    def _acquire_call(self) -> tuple[Backend, Call]:
        settings = self._settings or current()
        slot_exp = settings.default_slot_exp if isinstance(self._slot_exp, UnsetType) else self._slot_exp
        call = acquire_call(settings.prefix, self._key, new_slot_id(), self._max_size, ttl_ms(slot_exp))
        return settings.backend, call

    def _admitted(self, reply: object, call: Call) -> str:
        if not acquired(reply, call):
            raise CachifyPoolFullError(self._key, self._max_size)
        return str(call.args[0])

    def _plain_call(self, make: Callable[..., Call], *args: str) -> tuple[Backend, Call]:
        settings = self._settings or current()
        return settings.backend, make(settings.prefix, self._key, *args)

    def _pop(self) -> str:
        held = self._held.get()
        if not held:
            raise RuntimeError(f'{self!r} is exited more often than it was entered')
        self._held.set(held[:-1])
        return held[-1]
