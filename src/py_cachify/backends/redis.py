"""The Redis backend: each call is one EVALSHA of a Lua script, on a sync or asyncio client."""

from __future__ import annotations

import asyncio
from typing import Any, get_args

from redis import exceptions as rex
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from ..errors import CachifyBackendError, CachifyInitError
from ..giveback import GiveBacks
from ..notify import Wakeups
from ..ops import Call, ScriptName, sharded, sharded_pubsub
from ..scripts import source
from ..subscribers import TaskSubscriber, ThreadSubscriber
from . import durable
from .loops import LoopClients

__all__ = ['RedisBackend']

_SCRIPTS: tuple[ScriptName, ...] = get_args(ScriptName)


class RedisBackend:
    """Runs calls on `redis.Redis` / `redis.asyncio.Redis` (or a cluster client).

    The `Script` objects are made per client: redis-py's `Script` sends EVALSHA, reloads the
    script after NOSCRIPT, and routes by key on a cluster.
    """

    def __init__(self, sync_client: Any = None, async_client: Any = None) -> None:
        self._sync = {n: sync_client.register_script(source(n)) for n in _SCRIPTS} if sync_client else None
        self._sync_client = sync_client
        self._async = {n: async_client.register_script(source(n)) for n in _SCRIPTS} if async_client else None
        # redis-py binds an asyncio client's connections to one event loop: each loop gets its own.
        self.loop_clients = LoopClients(async_client) if async_client else None
        self.wakeups = Wakeups()
        self.give_backs = GiveBacks(self.run if sync_client else None, self.arun)
        # redis-py's asyncio cluster client breaks when its first commands run concurrently
        # (seen with 8.1: "'NoneType' object has no attribute 'writelines'"); initialize it once first.
        self._async_cluster = isinstance(async_client, AsyncRedisCluster)
        # Sharded pub/sub (SPUBLISH / SSUBSCRIBE) on a Redis >= 7 Cluster: decided by the first
        # call, which asks one node its version; None until then.
        self._sync_cluster = sync_client if isinstance(sync_client, RedisCluster) else None
        self._sharded: bool | None = None if self._sync_cluster or self._async_cluster else False
        # One subscriber connection for every waiter of this backend: the sync client's
        # (in a thread, serving async waiters too), else the asyncio client's (a task per loop).
        self._subscriber: ThreadSubscriber | TaskSubscriber = (
            ThreadSubscriber(sync_client, self.wakeups, self.sharded)
            if sync_client
            else TaskSubscriber(async_client, self.wakeups, self.sharded, self._loop_client)
        )

    async def _loop_client(self) -> Any:
        """The running loop's asyncio client: a subscriber takes its connection settings (and a Sentinel
        pool's sentinels, a cluster's nodes) from it, not from a client bound to another loop."""
        assert self.loop_clients is not None
        client, _ = await self.loop_clients.client()
        return client

    def sharded(self) -> bool:
        """Whether wake-ups go by sharded pub/sub (known once a call has run; False until then)."""
        return bool(self._sharded)

    def listen(self, channel: str) -> None:
        """Have release messages on `channel` reach `wakeups` from now on. Never blocks, never raises.

        A waiter does not wait for the subscription: when it is confirmed (first time, or
        again after a reconnect or failover), every waiter of the channel retries once.
        With only an asyncio client, call it inside the event loop whose waiters it serves.
        """
        self._subscriber.listen(channel)

    def close(self) -> None:
        """Stop the wake-up listener and background give-backs; close the pub/sub connection.

        The clients stay open and pools keep working: waiters are then woken by their
        fallback poll instead of by releases (`listen` does nothing any more). An asyncio
        listener is only asked to stop here: `aclose()` inside its loop waits for it.
        """
        self._subscriber.close()
        self.give_backs.close()
        if self.loop_clients is not None:
            self.loop_clients.close()

    async def aclose(self) -> None:
        """`close`, waiting for the listener (thread, or this loop's task) to end."""
        await self._subscriber.aclose()
        await self.give_backs.aclose()
        if self.loop_clients is not None:
            await self.loop_clients.aclose()

    def run(self, call: Call) -> object:
        """Run `call` on the sync client."""
        if self._sync is None:
            raise CachifyInitError(f'pool {call.pool!r} is used from sync code, but no sync_client was given')
        try:
            if self._sharded is None and self._sync_cluster is not None:  # else the asyncio client decides
                self._sharded = sharded_pubsub(_server_info(self._sync_cluster))
            if self._sharded:
                call = sharded(call)
            if call.replicas:
                return durable.run(self._sync_client, self._sync[call.script], call)
            return self._sync[call.script](keys=call.keys, args=call.args)
        except Exception as exc:
            raise backend_error(call, exc) from exc

    async def arun(self, call: Call) -> object:
        """Run `call` on the asyncio client."""
        if self._async is None or self.loop_clients is None:
            raise CachifyInitError(f'pool {call.pool!r} is used from async code, but no async_client was given')
        cancels = _cancel_requests()
        try:
            client, init_lock = await self.loop_clients.client()
            if self._async_cluster:
                await _initialize_cluster(client, init_lock)
                if self._sharded is None:
                    self._sharded = sharded_pubsub(await _aserver_info(client))
            if self._sharded:
                call = sharded(call)
            if call.replicas:
                reply: object = await durable.arun(client, self._async[call.script], call)
            else:
                reply = await self._async[call.script](keys=call.keys, args=call.args, client=client)
        except Exception as exc:
            raise backend_error(call, exc) from exc
        if _cancel_requests() > cancels:
            # redis-py's asyncio client can swallow a cancellation that lands mid-command
            # (seen with 8.1); honour it here, so a cancelled acquire gives its slot back.
            raise asyncio.CancelledError
        return reply


def _server_info(cluster: Any) -> object:
    """One node's INFO server; None if an ACL refuses INFO (plain pub/sub works on any version)."""
    try:
        return cluster.info('server', target_nodes=cluster.get_default_node())
    except rex.ResponseError:
        return None


async def _aserver_info(cluster: Any) -> object:
    """`_server_info` on an asyncio cluster client."""
    try:
        return await cluster.info('server', target_nodes=cluster.get_default_node())
    except rex.ResponseError:
        return None


async def _initialize_cluster(client: AsyncRedisCluster, lock: asyncio.Lock) -> None:
    if not getattr(client, '_initialize', False):
        return
    async with lock:
        if getattr(client, '_initialize', False):
            await client.initialize()


# Failures that may pass by themselves: the same call can succeed later (a failover, a restart,
# a partition). Anything else (WRONGTYPE, a script error, a client bound to another event loop)
# will fail the same way again.
_TRANSIENT: tuple[type[Exception], ...] = (
    rex.ConnectionError,  # covers BusyLoadingError
    rex.TimeoutError,
    OSError,  # a socket error redis-py did not wrap
    rex.ClusterDownError,
    rex.TryAgainError,
    rex.ReadOnlyError,  # a write reached a master that was demoted mid-failover
    rex.MasterDownError,
    rex.MovedError,  # a durable acquire sent to a master that has just lost the slot
)


def backend_error(call: Call, exc: Exception) -> CachifyBackendError:
    """What a caller sees of any failure while talking to the store: a `CachifyBackendError`."""
    # redis-py's asyncio cluster client can fail mid-failover on a connection it has torn
    # down ("'NoneType' object has no attribute 'writelines'"): a lost connection too.
    transient = isinstance(exc, _TRANSIENT) or (isinstance(exc, AttributeError) and "'NoneType'" in str(exc))
    return CachifyBackendError(call.pool, f'{type(exc).__name__}: {exc}', transient=transient)


def _cancel_requests() -> int:
    """How many cancellations the running task has been asked for (0 before Python 3.11)."""
    cancelling = getattr(asyncio.current_task(), 'cancelling', None)
    return cancelling() if cancelling is not None else 0
