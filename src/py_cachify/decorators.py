"""`pooled()`: run each call of a function while holding a slot of a pool."""

from __future__ import annotations

import functools
import inspect
import re
import string
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, Protocol, cast, overload

# TypeVar from typing_extensions: a default for `Full` (PEP 696) before Python 3.13.
from typing_extensions import Never, Self, TypeVar

from .errors import CachifyPoolFullError
from .ops import UNSET, SlotExp, UnsetType

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .pool import PoolOptions, pool
    from .settings import Settings

__all__ = [
    'AsyncOnFullDecorator',
    'AsyncPooled',
    'OnFullDecorator',
    'PooledDecorator',
    'SyncPooled',
    'check_decoratable',
    'decorator',
    'pooled',
]

P = ParamSpec('P')
Q = ParamSpec('Q')
R = TypeVar('R')
S = TypeVar('S')
T = TypeVar('T')
# What a call returns instead of running when the pool is full: None by default, `on_full`'s
# result with one, nothing (Never) with raise_on_full=True. Covariant, so every wrapper is also
# a `SyncPooled[P, R]` (None), the two-argument form py-cachify 3.1.0 annotations use.
Full = TypeVar('Full', covariant=True, default=None)

PoolFor = Callable[[tuple[Any, ...], dict[str, Any]], 'pool']


class SyncPooled(Protocol[P, R, Full]):
    """A sync function wrapped by `pooled`: returns `R`, or `Full` (None unless said) when full."""

    __wrapped__: Callable[P, R]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R | Full: ...

    def size(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """Live slots of the pool this call would use."""
        ...

    # Read off an instance, a decorated method is bound to it like the function it wraps.
    @overload
    def __get__(self, instance: None, owner: type[Any], /) -> Self: ...

    @overload
    def __get__(
        self: SyncPooled[Concatenate[S, Q], R, Full], instance: S, owner: type[Any], /
    ) -> Callable[Q, R | Full]: ...


class AsyncPooled(Protocol[P, R, Full]):
    """An async function wrapped by `pooled`: returns `R`, or `Full` (None unless said) when full."""

    __wrapped__: Callable[P, Awaitable[R]]

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R | Full: ...

    async def size(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """Live slots of the pool this call would use."""
        ...

    @overload
    def __get__(self, instance: None, owner: type[Any], /) -> Self: ...

    @overload
    def __get__(
        self: AsyncPooled[Concatenate[S, Q], R, Full], instance: S, owner: type[Any], /
    ) -> Callable[Q, Coroutine[Any, Any, R | Full]]: ...


class PooledDecorator(Protocol[Full]):
    """What `pooled(...)` returns without `on_full`: a decorator for a sync or an async function."""

    @overload
    def __call__(self, func: Callable[P, Awaitable[R]], /) -> AsyncPooled[P, R, Full]: ...  # type: ignore[overload-overlap]

    @overload
    def __call__(self, func: Callable[P, R], /) -> SyncPooled[P, R, Full]: ...


class OnFullDecorator(Protocol[P, Full]):
    """What `pooled(..., on_full=f)` returns for a sync `f`: the function must take `f`'s arguments."""

    @overload
    def __call__(self, func: Callable[P, Awaitable[R]], /) -> AsyncPooled[P, R, Full]: ...  # type: ignore[overload-overlap]

    @overload
    def __call__(self, func: Callable[P, R], /) -> SyncPooled[P, R, Full]: ...


class AsyncOnFullDecorator(Protocol[P, Full]):
    """What `pooled(..., on_full=f)` returns for an async `f`: it decorates async functions only."""

    def __call__(self, func: Callable[P, Awaitable[R]], /) -> AsyncPooled[P, R, Full]: ...


@overload
def pooled(
    key: str,
    max_size: int,
    on_full: Callable[..., Any] | None,
    raise_on_full: Literal[True],
    slot_exp: SlotExp | UnsetType = UNSET,
    *,
    settings: Settings | None = None,
    **options: Unpack[PoolOptions],
) -> PooledDecorator[Never]: ...


@overload
def pooled(
    key: str,
    max_size: int,
    on_full: Callable[..., Any] | None = None,
    *,
    raise_on_full: Literal[True],
    slot_exp: SlotExp | UnsetType = UNSET,
    settings: Settings | None = None,
    **options: Unpack[PoolOptions],
) -> PooledDecorator[Never]: ...


@overload
def pooled(  # type: ignore[overload-overlap]
    key: str,
    max_size: int,
    on_full: Callable[P, Awaitable[T]],
    raise_on_full: bool = False,
    slot_exp: SlotExp | UnsetType = UNSET,
    *,
    settings: Settings | None = None,
    **options: Unpack[PoolOptions],
) -> AsyncOnFullDecorator[P, T]: ...


@overload
def pooled(  # type: ignore[overload-overlap]
    key: str,
    max_size: int,
    on_full: Callable[P, T],
    raise_on_full: bool = False,
    slot_exp: SlotExp | UnsetType = UNSET,
    *,
    settings: Settings | None = None,
    **options: Unpack[PoolOptions],
) -> OnFullDecorator[P, T]: ...


@overload
def pooled(
    key: str,
    max_size: int,
    on_full: None = None,
    raise_on_full: bool = False,
    slot_exp: SlotExp | UnsetType = UNSET,
    *,
    settings: Settings | None = None,
    **options: Unpack[PoolOptions],
) -> PooledDecorator[None]: ...


@overload
def pooled(
    key: str,
    max_size: int,
    on_full: Callable[..., Any] | None,
    raise_on_full: bool,
    slot_exp: SlotExp | UnsetType = UNSET,
    *,
    settings: Settings | None = None,
    **options: Unpack[PoolOptions],
) -> PooledDecorator[Any]: ...


def pooled(
    key: str,
    max_size: int,
    on_full: Callable[..., Any] | None = None,
    raise_on_full: bool = False,
    slot_exp: SlotExp | UnsetType = UNSET,
    *,
    settings: Settings | None = None,
    **options: Unpack[PoolOptions],
) -> Any:
    """Decorate a sync or async function so each call holds a slot of a pool.

    `key` may name the function's arguments, `'user-{user_id}'`: each call formats it with
    its own arguments (defaults applied) and uses the pool of that key (suffixed `-pool`).
    When the pool is full: raise `CachifyPoolFullError` if `raise_on_full`, else return
    `on_full(*args, **kwargs)` (awaited if awaitable) if given, else return None.
    The wrapper has `.size(*args, **kwargs)`: the live slots of the pool that call would use
    (on a method, ask the class: `Service.work.size(service, ...)`).
    `nowait`, `timeout`, `fair`, `shed_at`, `auto_renew` and `on_lost` are as for `pool`.

    Typed by what a full pool gives: a call returns `R | None`, `R` with `raise_on_full=True`,
    or `R | T` with an `on_full` returning `T`. Type checkers hold the function to `on_full`'s
    parameters (an `on_full` taking `*args: Any, **kwargs: Any` fits any function).

    Raises `TypeError` / `ValueError` at decoration time for a bad `key`, `max_size` or
    `slot_exp`, a key naming an argument the function does not take, or an async `on_full`
    for a sync function. A key whose fields cannot be read from a call's arguments
    (`'{user.nope}'`) raises `ValueError` naming the template and the argument, at that call.
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

    return decorate


def decorator(pool_for: PoolFor, on_full: Callable[..., Any] | None, raise_on_full: bool) -> PooledDecorator[Any]:
    """The wrapping shared by `pooled()` and `pool.pooled()`; `pool_for` picks each call's pool."""

    def decorate(func: Callable[..., Any]) -> Any:
        check_decoratable(func)
        # Sync or async is decided once, here, not on every call.
        if is_async(func):
            return _wrap_async(func, pool_for, on_full, raise_on_full)
        if on_full is not None and is_async(on_full):
            # Its coroutine would be returned to sync code un-awaited.
            raise TypeError(f'on_full={on_full!r} is async, but {_name(func)} is sync: give a sync on_full')
        return _wrap_sync(func, pool_for, on_full, raise_on_full)

    return cast(PooledDecorator[Any], decorate)


def check_decoratable(func: object) -> None:
    """Raise `TypeError` unless `func` is something our decorators can wrap: a function,
    method or callable object, and not a task object of a task queue (Celery's `@app.task`).

    A task under our decorator would be replaced, in its module, by a plain function with
    no `.delay`, while the worker keeps running the registered task: without the pool, the
    lock or the cache, and without a word. So the wrong order fails here, at import time.
    """
    if inspect.isfunction(func) or inspect.ismethod(func):
        return  # the common case, decided without touching the object
    if not callable(func):
        raise TypeError(f'py_cachify decorates functions and callable objects, got {func!r}, which is not callable')
    if _is_task(func):
        raise TypeError(
            f'{func!r} is already a task (it has .delay and .apply_async): put the py_cachify decorator '
            'below the task decorator, right on the function, e.g.\n'
            '    @app.task(bind=True)\n'
            "    @pooled('key', max_size=2)\n"
            '    def work(self, ...): ...\n'
            'Above it, the worker would run the registered task with no pool, lock or cache at all.'
        )


def _is_task(func: object) -> bool:
    # Duck-typed, so importing py_cachify never imports Celery: a Celery task (or the lazy
    # proxy `@app.task` returns before the app is finalized) offers both of these.
    try:
        return callable(getattr(func, 'delay', None)) and callable(getattr(func, 'apply_async', None))
    except Exception:  # a lazy proxy that cannot be evaluated (yet) is no function either
        return False


def is_async(func: Callable[..., Any]) -> bool:
    """Whether calling `func` gives a coroutine: async functions, their wrappers and partials,
    and objects whose `__call__` is `async def`."""
    if inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(inspect.unwrap(func)):
        return True
    return inspect.iscoroutinefunction(type(func).__call__)


def _name(func: Callable[..., Any]) -> str:
    return str(getattr(func, '__qualname__', None) or repr(func))


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
        # Every decorator (pooled, lock, once, cached) reads its function here first.
        check_decoratable(func)
        self._template = template
        self._signature = inspect.signature(func)
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
        except ValueError as exc:
            raise ValueError(f'pool key {template!r} is not a valid format string: {exc}') from None
        self.constant = not fields
        # '{}' and '{.attr}' number themselves in order: name them as format() will read them.
        auto = iter(range(len(fields)))
        self._fields = [f'{next(auto)}{field}' if field[:1] in ('', '.', '[') else field for field in fields]
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
        except (AttributeError, TypeError, ValueError) as exc:
            raise ValueError(self._unreadable(positional, named, exc)) from exc

    def _unreadable(self, positional: tuple[Any, ...], named: dict[str, Any], exc: Exception) -> str:
        """Say which field of the key could not be read from which argument, and why."""
        formatter = string.Formatter()
        for field in self._fields:
            try:
                formatter.get_field(field, positional, named)
            except Exception as error:  # any failure to read it is the one to report
                root = re.split(r'[.\[]', field, maxsplit=1)[0]
                value = positional[int(root)] if root.isdigit() else named[root]
                return (
                    f'pool key {self._template!r} cannot read {{{field}}} from the argument {root}={value!r}: '
                    f'{type(error).__name__}: {error}'
                )
        return f'pool key {self._template!r} cannot be formatted: {type(exc).__name__}: {exc}'
