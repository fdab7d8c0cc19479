"""Which asyncio client each event loop uses: redis-py binds a client's connections to one loop.

The configured client serves the first loop that uses it (its home); every other loop gets a
clone built from its connection settings, with connections of its own. A loop's clone is
closed as that loop shuts down (`asyncio.run()` ending, a worker's per-task loop), and the
configured client's connections are dropped when its home loop shuts down, after which it
is retired: later loops get clones. So `asyncio.run()` per task, in any number of threads or
forked processes, works and leaves no connection behind.

The configured client goes through three states, each transition in one place below:
UNUSED -> HOME (first use, in a loop of the process that configured it) -> RETIRED (its
home loop shut down, `close()`, or a fork: the child must not touch the parent's sockets).
A client we cannot clone goes from RETIRED to HOME again in the next loop that uses it.

A loop's shutdown is seen through an async generator started in it: `asyncio.run()` (and
any runner calling `loop.shutdown_asyncgens()`) closes it inside the loop, before closing
the loop, so the clone is closed where its connections live. A cluster client's clone starts
from the nodes the configured one knows; a Sentinel client's clone asks sentinels of its own.
A client of a kind we cannot clone (a pool class of the application's) is used as configured
by one loop after another.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import os
import threading
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

__all__ = ['LoopClients']

log = logging.getLogger('py_cachify')

# Pools whose constructor we know: a clone of anything else could miss a setting that matters.
_CLONABLE: tuple[type, ...] = (
    redis.asyncio.ConnectionPool,
    redis.asyncio.BlockingConnectionPool,
    SentinelConnectionPool,
)


class Home(enum.Enum):
    UNUSED = 'unused'
    HOME = 'home'
    RETIRED = 'retired'


@dataclass
class _LoopClient:
    """The client one loop uses, and what closes it when the loop shuts down."""

    client: Any
    owned: bool  # a clone of ours (closed at shutdown), or the configured client (only disconnected)
    sentinels: list[Any] = field(default_factory=list)  # a Sentinel clone's own sentinel clients
    init_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # asyncio locks belong to one loop
    watcher: AsyncGenerator[None, None] | None = None


class LoopClients:
    """Hands each running event loop its asyncio client; closes clones with their loops."""

    def __init__(self, client: Any) -> None:
        self._configured = client
        self._clonable = (
            isinstance(client, AsyncRedisCluster) or type(getattr(client, 'connection_pool', None)) in _CLONABLE
        )
        self._lock = threading.Lock()  # loops in several threads share one backend
        self._loops: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        self._home = Home.UNUSED
        self._home_loop: asyncio.AbstractEventLoop | None = None
        _live.add(self)

    @property
    def home(self) -> Home:
        """Where the configured client stands: unused, serving its home loop, or retired."""
        return self._home

    def open(self) -> int:
        """How many loops hold a client of ours now (their clones, or the configured client)."""
        with self._lock:
            return sum(1 for loop in self._loops if not loop.is_closed())

    async def client(self) -> tuple[Any, asyncio.Lock]:
        """The running loop's client, and a lock of that loop (for a cluster client's first initialize)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._loops.get(loop)
            if entry is not None:
                return entry.client, entry.init_lock
            entry, abandoned = self._assign(loop)
        for gone in abandoned:
            _abandon(gone)
        # Started here, inside the loop: its shutdown_asyncgens() will close it, in the loop.
        entry.watcher = self._watch(loop, entry)
        await entry.watcher.asend(None)
        return entry.client, entry.init_lock

    def _assign(self, loop: asyncio.AbstractEventLoop) -> tuple[_LoopClient, list[_LoopClient]]:
        """Pick the client of a loop seen for the first time (under the lock); also return the
        entries of loops that were closed without shutting down their async generators."""
        abandoned = [e for other, e in self._loops.items() if other.is_closed()]
        self._loops = {other: e for other, e in self._loops.items() if not other.is_closed()}
        # One we cannot clone is taken again by the next loop once its home loop shut down.
        if self._home is Home.UNUSED or (self._home is Home.RETIRED and not self._clonable):
            self._home, self._home_loop = Home.HOME, loop
            entry = _LoopClient(self._configured, owned=False)
        elif not self._clonable:
            # Shared with a loop still running: redis-py may refuse it here (CachifyBackendError).
            entry = _LoopClient(self._configured, owned=False)
        else:
            clone, sentinels = _clone(self._configured)
            entry = _LoopClient(clone, owned=True, sentinels=sentinels)
        self._loops[loop] = entry
        return entry, abandoned

    async def _watch(self, loop: asyncio.AbstractEventLoop, entry: _LoopClient) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            # The loop is shutting down (or close() ran): nothing of it will use this client again.
            with self._lock:
                if self._loops.get(loop) is entry:
                    del self._loops[loop]
                retire = self._home_loop is loop and self._home is Home.HOME
                if retire:
                    self._home, self._home_loop = Home.RETIRED, None
            if not loop.is_closed():
                await _shut(entry, disconnect_configured=retire)

    def close(self) -> None:
        """Close every loop's clone (from any thread, without waiting); later loops get new ones."""
        self._close_except(None)

    async def aclose(self) -> None:
        """`close`, waiting for the running loop's own client to be closed."""
        running = asyncio.get_running_loop()
        with self._lock:
            mine = self._loops.get(running)
        self._close_except(running)
        if mine is not None and mine.watcher is not None:
            await mine.watcher.aclose()

    def _close_except(self, running: asyncio.AbstractEventLoop | None) -> None:
        with self._lock:
            entries = [(loop, e) for loop, e in self._loops.items() if loop is not running]
        for loop, entry in entries:
            if entry.watcher is not None and not loop.is_closed():
                # Closed inside its own loop, where its connections live.
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    asyncio.run_coroutine_threadsafe(_aclose(entry.watcher), loop)

    def _after_fork(self) -> None:
        # The parent's connections are not the child's: the configured client's sockets are
        # shared with the parent, so the child only ever uses clones of its own.
        self._lock = threading.Lock()
        self._loops = {}
        self._home_loop = None
        self._home = Home.RETIRED if self._clonable else Home.UNUSED


def _clone(client: Any) -> tuple[Any, list[Any]]:
    """A client with `client`'s connection settings and a connection pool of its own, and
    the sentinel clients it asks for its master (to close with it)."""
    if isinstance(client, AsyncRedisCluster):
        return _clone_cluster(client), []
    source = client.connection_pool
    if isinstance(source, SentinelConnectionPool):
        return _clone_sentinel(source)
    kwargs = {k: v for k, v in source.connection_kwargs.items() if k != 'maint_notifications_pool_handler'}
    if isinstance(source, redis.asyncio.BlockingConnectionPool):
        kwargs['timeout'] = source.timeout
    pool = type(source)(connection_class=source.connection_class, max_connections=source.max_connections, **kwargs)
    return redis.asyncio.Redis(connection_pool=pool), []


def _clone_sentinel(source: Any) -> tuple[Any, list[Any]]:
    """A client of the same service through sentinels of its own (theirs are bound to a loop too)."""
    manager = source.sentinel_manager
    addresses = [
        (s.connection_pool.connection_kwargs['host'], s.connection_pool.connection_kwargs['port'])
        for s in manager.sentinels
    ]
    untyped: Any = Sentinel  # redis-py's asyncio Sentinel is untyped
    sentinel: Any = untyped(
        addresses,
        min_other_sentinels=manager.min_other_sentinels,
        sentinel_kwargs=manager.sentinel_kwargs,
        force_master_ip=getattr(manager, '_force_master_ip', None),
        **manager.connection_kwargs,
    )
    skip = ('connection_pool', 'maint_notifications_pool_handler')
    kwargs = {k: v for k, v in source.connection_kwargs.items() if k not in skip}
    make = sentinel.master_for if source.is_master else sentinel.slave_for
    clone = make(
        source.service_name,
        connection_pool_class=type(source),
        check_connection=source.check_connection,
        max_connections=source.max_connections,
        **kwargs,
    )
    return clone, list(sentinel.sentinels)


# What a cluster client keeps of its constructor's arguments, outside its connection settings.
_CLUSTER_ATTRIBUTES = ('retry', 'require_full_coverage', 'load_balancing_strategy')
_CLUSTER_PARAMETERS = frozenset(inspect.signature(AsyncRedisCluster.__init__).parameters) - {'self', 'host', 'port'}


def _clone_cluster(client: Any) -> Any:
    """A cluster client with `client`'s settings, starting from the nodes it knows now."""
    settings = client.connection_kwargs
    kwargs = {k: v for k, v in settings.items() if k in _CLUSTER_PARAMETERS}
    if settings.get('connection_class') is SSLConnection:
        kwargs['ssl'] = True
    manager = client.nodes_manager
    for name in _CLUSTER_ATTRIBUTES:
        holder = client if hasattr(client, name) else manager
        if hasattr(holder, name):
            kwargs[name] = getattr(holder, name)
    kwargs['address_remap'] = getattr(manager, 'address_remap', None)
    if getattr(client, 'read_from_replicas', False):  # deprecated by redis-py: passed only if set
        kwargs['read_from_replicas'] = True
    nodes = [ClusterNode(node.host, node.port) for node in client.get_nodes()] or [
        ClusterNode(node.host, node.port) for node in client.startup_nodes
    ]
    return AsyncRedisCluster(startup_nodes=nodes, **kwargs)


def _abandon(entry: _LoopClient) -> None:
    """Finish the watcher of a loop closed without shutting down its async generators.

    Its client cannot be awaited any more (its sockets go with the garbage); finishing the
    watcher here, where it awaits nothing, keeps its loop's finalizer from being called on
    a closed loop when the garbage collector finds it.
    """
    if entry.watcher is None:
        return
    closing = entry.watcher.aclose()
    try:
        closing.send(None)
    except StopIteration:
        pass
    except Exception:  # it was finished already, or is running: nothing more to do
        log.debug('py_cachify: finishing the client of a closed loop failed', exc_info=True)
        closing.close()


async def _aclose(watcher: AsyncGenerator[None, None]) -> None:
    await watcher.aclose()


async def _shut(entry: _LoopClient, disconnect_configured: bool) -> None:
    client = entry.client
    if isinstance(client, AsyncRedisCluster):
        # A cluster client's aclose() closes its nodes' connections and leaves it usable
        # (it initializes again when used): fine for the configured client too.
        closing = [client.aclose()] if entry.owned or disconnect_configured else []
    elif entry.owned:
        closing = [client.aclose(close_connection_pool=True), *(s.aclose() for s in entry.sentinels)]
    elif disconnect_configured:
        # The configured client stays the caller's; only its connections of this loop go
        # (one we cannot clone then serves the next loop with new connections).
        pool = client.connection_pool
        sentinels = getattr(getattr(pool, 'sentinel_manager', None), 'sentinels', ())
        closing = [pool.disconnect(), *(s.connection_pool.disconnect() for s in sentinels)]
    else:
        closing = []
    # Each on its own: one broken connection must not keep the others open.
    for outcome in await asyncio.gather(*closing, return_exceptions=True):
        if isinstance(outcome, Exception):
            log.debug('py_cachify: closing a loop client failed', exc_info=outcome)


_live: weakref.WeakSet[LoopClients] = weakref.WeakSet()


def _reset_in_child() -> None:
    for clients in list(_live):
        clients._after_fork()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_reset_in_child)
