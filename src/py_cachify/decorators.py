"""`pooled()`: run each call of a function while holding a slot of a pool."""

from __future__ import annotations

import functools
import inspect
import re
import string
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast, overload

from .errors import CachifyPoolFullError
from .ops import UNSET, SlotExp, UnsetType

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .pool import PoolOptions, pool
    from .settings import Settings

__all__ = ['AsyncPooled', 'PooledDecorator', 'SyncPooled', 'decorator', 'pooled']

P = ParamSpec('P')
R = TypeVar('R')

PoolFor = Callable[[tuple[Any, ...], dict[str, Any]], 'pool']


class SyncPooled(Protocol[P, R]):
    """A sync function wrapped by `pooled`: returns None (or `on_full`'s value) when full."""

    __wrapped__: Callable[P, R]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R | None: ...

    def size(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """Live slots of the pool this call would use."""
        ...


class AsyncPooled(Protocol[P, R]):
    """An async function wrapped by `pooled`: returns None (or `on_full`'s value) when full."""

    __wrapped__: Callable[P, Awaitable[R]]

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R | None: ...

    async def size(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """Live slots of the pool this call would use."""
        ...


class PooledDecorator(Protocol):
    """What `pooled(...)` returns: a decorator for a sync or an async function."""

    @overload
    def __call__(self, func: Callable[P, Awaitable[R]]) -> AsyncPooled[P, R]: ...  # type: ignore[overload-overlap]

    @overload
    def __call__(self, func: Callable[P, R]) -> SyncPooled[P, R]: ...


def pooled(
    key: str,
    max_size: int,
    on_full: Callable[..., Any] | None = None,
    raise_on_full: bool = False,
    slot_exp: SlotExp | UnsetType = UNSET,
    *,
    settings: Settings | None = None,
    **options: Unpack[PoolOptions],
) -> PooledDecorator:
    """Decorate a sync or async function so each call holds a slot of a pool.

    `key` may name the function's arguments, `'user-{user_id}'`: each call formats it with
    its own arguments (defaults applied) and uses the pool of that key (suffixed `-pool`).
    When the pool is full: raise `CachifyPoolFullError` if `raise_on_full`, else return
    `on_full(*args, **kwargs)` (awaited if awaitable) if given, else return None.
    The wrapper has `.size(*args, **kwargs)`: the live slots of the pool that call would use.
    `nowait`, `timeout`, `fair`, `auto_renew` and `on_lost` are as for `pool`.

    Raises `TypeError` / `ValueError` at decoration time for a bad `key`, `max_size` or
    `slot_exp`, or a key naming an argument the function does not take.
    """
    from .pool import pool

    pool(key, max_size, slot_exp, settings=settings, **options)  # validates every argument, before any call

    def decorate(func: Callable[..., Any]) -> Any:
        template = _KeyTemplate(key, func)
        if template.constant:
            shared = pool(f'{key}-pool', max_size, slot_exp, settings=settings, **options)
            return decorator(lambda args, kwargs: shared, on_full, raise_on_full)(func)
        return decorator(
            lambda args, kwargs: pool(
                f'{template.format(args, kwargs)}-pool', max_size, slot_exp, settings=settings, **options
            ),
            on_full,
            raise_on_full,
        )(func)

    return cast(PooledDecorator, decorate)


def decorator(pool_for: PoolFor, on_full: Callable[..., Any] | None, raise_on_full: bool) -> PooledDecorator:
    """The wrapping shared by `pooled()` and `pool.pooled()`; `pool_for` picks each call's pool."""

    def decorate(func: Callable[..., Any]) -> Any:
        # Sync or async is decided once, here, not on every call.
        if inspect.iscoroutinefunction(inspect.unwrap(func)) or inspect.iscoroutinefunction(func):
            return _wrap_async(func, pool_for, on_full, raise_on_full)
        return _wrap_sync(func, pool_for, on_full, raise_on_full)

    return cast(PooledDecorator, decorate)


def _wrap_sync(
    func: Callable[..., Any], pool_for: PoolFor, on_full: Callable[..., Any] | None, raise_on_full: bool
) -> Any:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        target = pool_for(args, kwargs)
        try:
            lease = target.acquire()
        except CachifyPoolFullError:
            if raise_on_full:
                raise
            return on_full(*args, **kwargs) if on_full is not None else None
        with lease:  # the innermost lease here: `extend()` inside the call finds it
            return func(*args, **kwargs)

    def size(*args: Any, **kwargs: Any) -> int:
        return pool_for(args, kwargs).size()

    wrapper.size = size  # type: ignore[attr-defined]
    return wrapper


def _wrap_async(
    func: Callable[..., Any], pool_for: PoolFor, on_full: Callable[..., Any] | None, raise_on_full: bool
) -> Any:
    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        target = pool_for(args, kwargs)
        try:
            lease = await target.aacquire()
        except CachifyPoolFullError:
            if raise_on_full:
                raise
            if on_full is None:
                return None
            result = on_full(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result
        async with lease:  # its exit gives the slot back even while the call is being cancelled
            return await func(*args, **kwargs)

    async def size(*args: Any, **kwargs: Any) -> int:
        return await pool_for(args, kwargs).asize()

    wrapper.size = size  # type: ignore[attr-defined]
    return wrapper


class _KeyTemplate:
    """A key such as 'user-{user_id}', checked against the function once, formatted per call."""

    def __init__(self, template: str, func: Callable[..., Any]) -> None:
        self._template = template
        self._signature = inspect.signature(func)
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
        except ValueError as exc:
            raise ValueError(f'pool key {template!r} is not a valid format string: {exc}') from None
        self.constant = not fields
        params = self._signature.parameters.values()
        takes_var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
        takes_var_pos = any(p.kind is p.VAR_POSITIONAL for p in params)
        names = {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        for field in fields:
            name = re.split(r'[.\[]', field, maxsplit=1)[0]
            positional = name == '' or name.isdigit()
            if (positional and not takes_var_pos) or (not positional and name not in names and not takes_var_kw):
                raise ValueError(
                    f'pool key {template!r} names {{{field}}}, but {func.__qualname__}{self._signature} '
                    'takes no such argument'
                )

    def format(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        positional: tuple[Any, ...] = ()
        named: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            kind = self._signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                positional = value
            elif kind is inspect.Parameter.VAR_KEYWORD:
                named.update(value)
            else:
                named[name] = value
        try:
            return self._template.format(*positional, **named)
        except (IndexError, KeyError) as exc:
            raise ValueError(f'pool key {self._template!r} cannot be formatted from {bound}: missing {exc}') from None
