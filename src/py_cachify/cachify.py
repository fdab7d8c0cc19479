"""`init_cachify()` and `Cachify`: choose the backend, prefix and defaults of pools, locks and the cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, overload

from . import renewal
from .backends import Backend
from .backends.client import ClientBackend
from .backends.memory import MemoryBackend
from .backends.redis import RedisBackend
from .cached import WrappedFunctionReset, cached
from .cacheops import validate_ttl
from .clients import check_clients
from .codecs import Decoder, Encoder
from .decorators import PooledDecorator, pooled
from .lock import WrappedFunctionLock, lock, once
from .ops import UNSET, SlotExp, UnsetType, validate_seconds, validate_slot_exp
from .pool import PoolOptions, pool
from .settings import Settings, install

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from typing_extensions import Never, Unpack

    from .decorators import AsyncOnFullDecorator, OnFullDecorator, P, T
    from .renewal import OnLost

__all__ = ['Cachify', 'init_cachify']


class Cachify:
    """A configured py_cachify: its `pool`, `pooled`, `lock`, `once` and `cached` use this
    instance's client, prefix and defaults.

    With no client at all it runs on an embedded in-process store (one process only).
    With a sync and/or async redis-py client (`redis.Redis`, `redis.asyncio.Redis`, or the
    cluster clients), everything is shared by every process that uses the same Redis and
    prefix. Any other client with get/set/delete (py-cachify's `SyncClient` / `AsyncClient`)
    serves `cached`, `lock` and `once`; pools then raise `CachifyInitError`.
    """

    def __init__(
        self,
        sync_client: Any = None,
        async_client: Any = None,
        prefix: str = 'PYC-',
        default_pool_slot_expiration: SlotExp = 600,
        default_lock_expiration: SlotExp = 30,
        default_cache_ttl: int | None = None,
        lock_poll_interval: float = 0.1,
    ) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f'prefix must be a str, got {prefix!r}')
        validate_slot_exp(default_pool_slot_expiration, 'default_pool_slot_expiration')
        validate_slot_exp(default_lock_expiration, 'default_lock_expiration')
        validate_ttl(default_cache_ttl, 'default_cache_ttl')
        validate_seconds(lock_poll_interval, 'lock_poll_interval')
        kind = check_clients(sync_client, async_client)
        backend: Backend
        if kind == 'protocol':
            backend = ClientBackend(sync_client, async_client)
        elif kind == 'redis':
            backend = RedisBackend(sync_client, async_client)
        else:
            backend = MemoryBackend()
        self.settings = Settings(
            backend=backend,
            prefix=prefix,
            default_slot_exp=default_pool_slot_expiration,
            default_lock_exp=default_lock_expiration,
            default_cache_ttl=default_cache_ttl,
            lock_poll_interval=lock_poll_interval,
        )

    def close(self) -> None:
        """Stop this instance's wake-up listener, renewers and background give-backs, and close
        its pub/sub connections. Held slots stay held until released or expired; pools keep
        working afterwards, waiting by polling. Idempotent.
        """
        renewal.stop_all(self.settings.backend)
        self.settings.backend.close()

    async def aclose(self) -> None:
        """`close`, from asyncio code: also waits for this event loop's listener and retry tasks."""
        renewal.stop_all(self.settings.backend)
        await self.settings.backend.aclose()

    def lock(
        self,
        key: str,
        nowait: bool = True,
        timeout: float | None = None,
        exp: SlotExp | UnsetType = UNSET,
        *,
        auto_renew: bool = False,
        on_lost: OnLost | None = None,
    ) -> lock:
        """A `lock` on this instance's client; see `py_cachify.lock`."""
        return lock(key, nowait, timeout, exp, auto_renew=auto_renew, on_lost=on_lost, settings=self.settings)

    def once(self, key: str, raise_on_locked: bool = False, return_on_locked: Any = None) -> WrappedFunctionLock:
        """`once` on this instance's client; see `py_cachify.once`."""
        return once(key, raise_on_locked, return_on_locked, settings=self.settings)

    def cached(
        self,
        key: str,
        ttl: int | UnsetType | None = UNSET,
        enc_dec: tuple[Encoder, Decoder] | None = None,
        *,
        stampede_timeout: float = 10.0,
    ) -> WrappedFunctionReset:
        """`cached` on this instance's client; see `py_cachify.cached`."""
        return cached(key, ttl, enc_dec, stampede_timeout=stampede_timeout, settings=self.settings)

    def pool(
        self, key: str, max_size: int, slot_exp: SlotExp | UnsetType = UNSET, **options: Unpack[PoolOptions]
    ) -> pool:
        """A `pool` on this instance's client; see `py_cachify.pool`."""
        return pool(key, max_size, slot_exp, settings=self.settings, **options)

    # The result's type follows on_full and raise_on_full, as for `py_cachify.pooled`.
    @overload
    def pooled(
        self,
        key: str,
        max_size: int,
        on_full: Callable[..., Any] | None,
        raise_on_full: Literal[True],
        slot_exp: SlotExp | UnsetType = UNSET,
        **options: Unpack[PoolOptions],
    ) -> PooledDecorator[Never]: ...

    @overload
    def pooled(
        self,
        key: str,
        max_size: int,
        on_full: Callable[..., Any] | None = None,
        *,
        raise_on_full: Literal[True],
        slot_exp: SlotExp | UnsetType = UNSET,
        **options: Unpack[PoolOptions],
    ) -> PooledDecorator[Never]: ...

    @overload
    def pooled(  # type: ignore[overload-overlap]
        self,
        key: str,
        max_size: int,
        on_full: Callable[P, Awaitable[T]],
        raise_on_full: bool = False,
        slot_exp: SlotExp | UnsetType = UNSET,
        **options: Unpack[PoolOptions],
    ) -> AsyncOnFullDecorator[P, T]: ...

    @overload
    def pooled(
        self,
        key: str,
        max_size: int,
        on_full: Callable[P, T],
        raise_on_full: bool = False,
        slot_exp: SlotExp | UnsetType = UNSET,
        **options: Unpack[PoolOptions],
    ) -> OnFullDecorator[P, T]: ...

    @overload
    def pooled(
        self,
        key: str,
        max_size: int,
        on_full: None = None,
        raise_on_full: bool = False,
        slot_exp: SlotExp | UnsetType = UNSET,
        **options: Unpack[PoolOptions],
    ) -> PooledDecorator[None]: ...

    def pooled(
        self,
        key: str,
        max_size: int,
        on_full: Callable[..., Any] | None = None,
        raise_on_full: bool = False,
        slot_exp: SlotExp | UnsetType = UNSET,
        **options: Unpack[PoolOptions],
    ) -> Any:
        """`pooled` on this instance's client; see `py_cachify.pooled`."""
        return pooled(key, max_size, on_full, raise_on_full, slot_exp, settings=self.settings, **options)


def init_cachify(
    sync_client: Any = None,
    async_client: Any = None,
    default_lock_expiration: int | None = 30,
    default_cache_ttl: int | None = None,
    prefix: str = 'PYC-',
    lock_poll_interval: float = 0.1,
    default_pool_slot_expiration: SlotExp = 600,
    *,
    is_global: bool = True,
) -> Cachify:
    """Configure py_cachify and return the `Cachify` for it.

    `sync_client` / `async_client` are redis-py clients; leave both out to run on the
    embedded in-process store. Clients with only get/set/delete serve `cached`, `lock` and
    `once`, not pools. `prefix` starts every key. Defaults, in seconds (None = never expire):
    `default_lock_expiration` for locks, `default_cache_ttl` for cached values,
    `default_pool_slot_expiration` for pool slots. `lock_poll_interval` is how often a
    waiting lock (or a caller waiting for a value being computed) looks again when no
    wake-up message reaches it. With `is_global=True` (the default) the module-level `pool`,
    `pooled`, `lock`, `once` and `cached` use it from now on; with `is_global=False` the
    returned instance is independent of the global one.
    """
    cachify = Cachify(
        sync_client,
        async_client,
        prefix,
        default_pool_slot_expiration,
        default_lock_expiration,
        default_cache_ttl,
        lock_poll_interval,
    )
    if is_global:
        replaced = install(cachify.settings)
        if replaced is not None:
            # Its listener and renewers would otherwise run for the life of the process.
            renewal.stop_all(replaced.backend)
            replaced.backend.close()
    return cachify
