"""What `init_cachify` accepts as clients: redis-py's clients, or any with py-cachify's get/set/delete protocol."""

from __future__ import annotations

from typing import Literal

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

__all__ = ['ClientKind', 'check_clients']

# Subclasses count too: fakeredis's clients, Sentinel's masters and cluster clients are redis-py's.
_SYNC: tuple[type, ...] = (redis.Redis, redis.cluster.RedisCluster)
_ASYNC: tuple[type, ...] = (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)

# 'redis': redis-py clients (or none): every feature, through Lua. 'protocol': at least one
# client has only get/set/delete (py-cachify's SyncClient / AsyncClient): cached, lock, once.
ClientKind = Literal['none', 'redis', 'protocol']


def check_clients(sync_client: object, async_client: object) -> ClientKind:
    """Say what the clients are; raise `TypeError` naming the argument for anything else.

    A redis-py client given as `async_client` (or the other way round) would otherwise fail
    only at its first use, with a reply that is a coroutine. Any other object must offer
    `get`, `set` and `delete` (py-cachify's client protocol).
    """
    sync_kind = _check(
        'sync_client', sync_client, _SYNC, _ASYNC, 'redis.Redis or redis.cluster.RedisCluster', 'async_client'
    )
    async_kind = _check(
        'async_client',
        async_client,
        _ASYNC,
        _SYNC,
        'redis.asyncio.Redis or redis.asyncio.cluster.RedisCluster',
        'sync_client',
    )
    if 'protocol' in (sync_kind, async_kind):
        return 'protocol'
    return 'redis' if 'redis' in (sync_kind, async_kind) else 'none'


def _check(
    name: str, client: object, wanted: tuple[type, ...], other: tuple[type, ...], kinds: str, swap: str
) -> ClientKind:
    if client is None:
        return 'none'
    if isinstance(client, wanted):
        return 'redis'
    got = f'{type(client).__module__}.{type(client).__qualname__}'
    if isinstance(client, other):
        raise TypeError(f'{name} must be a {kinds} client, got {got}, which belongs in {swap}')
    if all(callable(getattr(client, method, None)) for method in ('get', 'set', 'delete')):
        return 'protocol'
    raise TypeError(f'{name} must be a redis-py client ({kinds}) or offer get/set/delete, got {client!r} of type {got}')
