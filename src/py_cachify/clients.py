"""What `init_cachify` accepts as clients: redis-py's sync and asyncio clients, each in its own place."""

from __future__ import annotations

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

__all__ = ['check_clients']

# Subclasses count too: fakeredis's clients, Sentinel's masters and cluster clients are redis-py's.
_SYNC: tuple[type, ...] = (redis.Redis, redis.cluster.RedisCluster)
_ASYNC: tuple[type, ...] = (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)


def check_clients(sync_client: object, async_client: object) -> None:
    """Raise `TypeError` naming the argument unless each client is None or redis-py's of its kind.

    A sync client given as `async_client` (or the other way round) would otherwise fail only at
    its first use, with a reply that is a coroutine; anything else is not a client we can drive.
    """
    _check('sync_client', sync_client, _SYNC, _ASYNC, 'redis.Redis or redis.cluster.RedisCluster', 'async_client')
    _check(
        'async_client',
        async_client,
        _ASYNC,
        _SYNC,
        'redis.asyncio.Redis or redis.asyncio.cluster.RedisCluster',
        'sync_client',
    )


def _check(name: str, client: object, wanted: tuple[type, ...], other: tuple[type, ...], kinds: str, swap: str) -> None:
    if client is None or isinstance(client, wanted):
        return
    got = f'{type(client).__module__}.{type(client).__qualname__}'
    if isinstance(client, other):
        raise TypeError(f'{name} must be a {kinds} client, got {got}, which belongs in {swap}')
    raise TypeError(f'{name} must be a redis-py client ({kinds}), got {client!r} of type {got}')
