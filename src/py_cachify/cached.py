"""`cached`: keep a function's results in Redis (or the embedded store), with stampede protection.

A value lives at `<prefix><formatted key>-cached`, pickled (after the encoder, if any): the
key and encoding of py-cachify 3.1.0, so either reads what the other wrote. A miss claims
the right to compute (one script call); callers that miss meanwhile wait for that value,
woken by its store through the pools' pub/sub wake-ups, and compute themselves only after
`stampede_timeout` seconds. An exception (or an encoder that fails) caches nothing and wakes
the waiters, one of which computes next.
"""

from __future__ import annotations

import contextlib
import functools
import pickle
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator
from functools import partial
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast, overload

from . import steps
from .backends import Backend
from .cacheops import (
    Compute,
    Hit,
    abandon_call,
    cache_channel,
    delete_call,
    fetch_flow,
    new_token,
    store_call,
    validate_ttl,
)
from .codecs import Decoder, Encoder
from .decorators import _KeyTemplate, is_async
from .errors import CachifyBackendError
from .lease import survive_cancellation
from .notify import Wakeups
from .ops import UNSET, Call, UnsetType, validate_timeout
from .settings import Settings, current
from .steps import Step

if TYPE_CHECKING:
    from typing import Concatenate

    from typing_extensions import Self

__all__ = ['AsyncResetWrappedF', 'SyncResetWrappedF', 'WrappedFunctionReset', 'cached']

P = ParamSpec('P')
Q = ParamSpec('Q')
R = TypeVar('R')
S = TypeVar('S')

# How long callers that miss wait for the one computing the value, unless told otherwise.
STAMPEDE_TIMEOUT = 10.0


def cached(
    key: str,
    ttl: int | UnsetType | None = UNSET,
    enc_dec: tuple[Encoder, Decoder] | None = None,
    *,
    stampede_timeout: float = STAMPEDE_TIMEOUT,
    settings: Settings | None = None,
) -> WrappedFunctionReset:
    """Cache the decorated function's results under `key` (a format string over its arguments).

    `ttl` is seconds (default `default_cache_ttl` of `init_cachify`; None = no expiry).
    `enc_dec=(encoder, decoder)` converts results to something pickle can store and back.
    When a value is missing and many callers ask at once (in any process), one computes and
    the others wait for its value, at most `stampede_timeout` seconds (0: never wait), then
    compute themselves. The function gets `reset(*args, **kwargs)`, which forgets that call's
    value. Raises `TypeError` / `ValueError` for bad arguments at decoration.
    """
    if not isinstance(key, str) or not key:
        raise TypeError(f'cache key must be a non-empty str, got {key!r}')
    if not isinstance(ttl, UnsetType):
        validate_ttl(ttl)
    wait = validate_timeout(stampede_timeout)
    if wait is None:
        raise TypeError('stampede_timeout must be seconds >= 0, got None')
    encode, decode = _codec(enc_dec)

    def decorate(func: Callable[..., Any]) -> Any:
        template = _KeyTemplate(key, func)

        def target(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Settings, str, int | None]:
            s = settings or current()
            lifetime = s.default_cache_ttl if isinstance(ttl, UnsetType) else ttl
            return s, f'{s.prefix}{template.format(args, kwargs)}-cached', validate_ttl(lifetime, 'default_cache_ttl')

        inner_reset = getattr(func, 'reset', None)

        if is_async(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                s, value_key, lifetime = target(args, kwargs)
                token = new_token()
                found = await _afetch(s, value_key, fetch_flow(value_key, token, wait, s.lock_poll_interval), token)
                if isinstance(found, Hit):
                    return decode(found.value)
                try:
                    result = await func(*args, **kwargs)
                    raw = encode(result)
                except BaseException:
                    if found.claimed:
                        await survive_cancellation(_agive_up(s.backend, abandon_call(value_key, token)))
                    raise
                await s.backend.arun(store_call(value_key, token, raw, lifetime))
                return result

            async def areset(*args: Any, **kwargs: Any) -> None:
                s, value_key, _ = target(args, kwargs)
                await s.backend.arun(delete_call(value_key))
                if inner_reset is not None:
                    await inner_reset(*args, **kwargs)

            async_wrapper.reset = areset  # type: ignore[attr-defined]
            return async_wrapper

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            s, value_key, lifetime = target(args, kwargs)
            token = new_token()
            found = _fetch(s, value_key, fetch_flow(value_key, token, wait, s.lock_poll_interval), token)
            if isinstance(found, Hit):
                return decode(found.value)
            try:
                result = func(*args, **kwargs)
                raw = encode(result)
            except BaseException:
                if found.claimed:
                    _give_up(s.backend, abandon_call(value_key, token))
                raise
            s.backend.run(store_call(value_key, token, raw, lifetime))
            return result

        def reset(*args: Any, **kwargs: Any) -> None:
            s, value_key, _ = target(args, kwargs)
            s.backend.run(delete_call(value_key))
            if inner_reset is not None:
                inner_reset(*args, **kwargs)

        sync_wrapper.reset = reset  # type: ignore[attr-defined]
        return sync_wrapper

    return cast(WrappedFunctionReset, decorate)


def _codec(enc_dec: object) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    """Pickle, after the encoder (and before the decoder), as py-cachify 3.1.0 stores values."""
    if enc_dec is None:
        return pickle.dumps, pickle.loads
    if not (isinstance(enc_dec, tuple) and len(enc_dec) == 2 and all(callable(f) for f in enc_dec)):
        raise TypeError(f'enc_dec must be a pair (encoder, decoder) of callables, got {enc_dec!r}')
    encoder, decoder = enc_dec
    return (lambda value: pickle.dumps(encoder(value))), (lambda raw: decoder(pickle.loads(raw)))


def _give_up(backend: Backend, call: Call) -> None:
    # The function's own exception is what the caller must see; a claim that cannot be
    # dropped now expires by itself after stampede_timeout.
    with contextlib.suppress(CachifyBackendError):
        backend.run(call)


async def _agive_up(backend: Backend, call: Call) -> None:
    with contextlib.suppress(CachifyBackendError):
        await backend.arun(call)


# -- driving the fetch rules ---------------------------------------------------------------------


def _fetch(
    settings: Settings, value_key: str, flow: Generator[Step, object, Hit | Compute], token: str
) -> Hit | Compute:
    backend, channel = settings.backend, cache_channel(value_key)
    return steps.run(flow, backend, channel, *_herd.wake_ups(backend.wakeups, channel, token))


async def _afetch(
    settings: Settings, value_key: str, flow: Generator[Step, object, Hit | Compute], token: str
) -> Hit | Compute:
    backend, channel = settings.backend, cache_channel(value_key)
    return await steps.arun(flow, backend, channel, *_herd.wake_ups(backend.wakeups, channel, token))


class _Herd:
    """Every local waiter of a value, behind one entry of the backend's wake-ups.

    A store wakes one entry per channel (a pool's release is for one waiter); all waiters of
    a value want it, so that one entry wakes them all.
    """

    _ENTRY = 'cached-waiters'

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[tuple[Wakeups, str], dict[str, Callable[[], object]]] = {}

    def add(self, wakeups: Wakeups, channel: str, token: str, wake: Callable[[], object]) -> None:
        with self._lock:
            waiters = self._waiters.setdefault((wakeups, channel), {})
            if not waiters:
                wakeups.add(channel, self._ENTRY, partial(self._wake_all, wakeups, channel))
            waiters[token] = wake

    def wake_ups(self, wakeups: Wakeups, channel: str, token: str) -> tuple[steps.Register, Callable[[], None]]:
        """How a waiter for the value registers its wake-up, and forgets it."""
        return partial(self.add, wakeups, channel, token), partial(self.discard, wakeups, channel, token)

    def discard(self, wakeups: Wakeups, channel: str, token: str) -> None:
        with self._lock:
            waiters = self._waiters.get((wakeups, channel), {})
            waiters.pop(token, None)
            if not waiters:
                self._waiters.pop((wakeups, channel), None)
                wakeups.discard(channel, self._ENTRY)

    def _wake_all(self, wakeups: Wakeups, channel: str) -> None:
        with self._lock:
            wakes = list(self._waiters.get((wakeups, channel), {}).values())
        for wake in wakes:
            wake()


_herd = _Herd()


# -- the types of decorated functions (py-cachify 3.1.0's names) ---------------------------------


class SyncResetWrappedF(Protocol[P, R]):
    """A sync function wrapped by `cached`."""

    __wrapped__: Callable[P, R]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def reset(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Forget the value cached for these arguments."""
        ...

    @overload
    def __get__(self, instance: None, owner: type[Any], /) -> Self: ...

    @overload
    def __get__(self: SyncResetWrappedF[Concatenate[S, Q], R], instance: S, owner: type[Any], /) -> Callable[Q, R]: ...


class AsyncResetWrappedF(Protocol[P, R]):
    """An async function wrapped by `cached`."""

    __wrapped__: Callable[P, Awaitable[R]]

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    async def reset(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Forget the value cached for these arguments."""
        ...

    @overload
    def __get__(self, instance: None, owner: type[Any], /) -> Self: ...

    @overload
    def __get__(
        self: AsyncResetWrappedF[Concatenate[S, Q], R], instance: S, owner: type[Any], /
    ) -> Callable[Q, Coroutine[Any, Any, R]]: ...


class WrappedFunctionReset(Protocol):
    """What `cached(...)` returns: a decorator for a sync or an async function."""

    @overload
    def __call__(self, func: Callable[P, Awaitable[R]], /) -> AsyncResetWrappedF[P, R]: ...  # type: ignore[overload-overlap]

    @overload
    def __call__(self, func: Callable[P, R], /) -> SyncResetWrappedF[P, R]: ...
