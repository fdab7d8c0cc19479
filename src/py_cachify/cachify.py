"""`init_cachify()` and `Cachify`: choose the backend and prefix that pools run on."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, overload

from . import renewal
from .backends.memory import MemoryBackend
from .backends.redis import RedisBackend
from .clients import check_clients
from .decorators import PooledDecorator, pooled
from .ops import UNSET, SlotExp, UnsetType, validate_slot_exp
from .pool import PoolOptions, pool
from .settings import Settings, install

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from typing_extensions import Never, Unpack

    from .decorators import AsyncOnFullDecorator, OnFullDecorator, P, T

__all__ = ['Cachify', 'init_cachify']


class Cachify:
    """A configured py_cachify: its `pool` and `pooled` use this instance's client and prefix.

    With no client at all it runs on an embedded in-process store (one process only).
    With a sync and/or async redis-py client (`redis.Redis`, `redis.asyncio.Redis`, or the
    cluster clients), pools are shared by every process that uses the same Redis and prefix.
    """

    def __init__(
        self,
        sync_client: Any = None,
        async_client: Any = None,
        prefix: str = 'PYC-',
        default_pool_slot_expiration: SlotExp = 600,
    ) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f'prefix must be a str, got {prefix!r}')
        validate_slot_exp(default_pool_slot_expiration, 'default_pool_slot_expiration')
        check_clients(sync_client, async_client)
        backend = RedisBackend(sync_client, async_client) if sync_client or async_client else MemoryBackend()
        self.settings = Settings(backend=backend, prefix=prefix, default_slot_exp=default_pool_slot_expiration)

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
    embedded in-process store. `prefix` starts every key. `default_pool_slot_expiration`
    is the slot lifetime in seconds when a pool gives none (None = never expire).
    With `is_global=True` (the default) the module-level `pool` and `pooled` use it from
    now on; with `is_global=False` the returned instance is independent of the global one.

    `default_lock_expiration`, `default_cache_ttl` and `lock_poll_interval` configure
    py-cachify's locks and cache, which this package does not have; they are accepted so
    existing calls keep working, and ignored.
    """
    cachify = Cachify(sync_client, async_client, prefix, default_pool_slot_expiration)
    if is_global:
        replaced = install(cachify.settings)
        if replaced is not None:
            # Its listener and renewers would otherwise run for the life of the process.
            renewal.stop_all(replaced.backend)
            replaced.backend.close()
    return cachify
