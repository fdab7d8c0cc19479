"""The subscriber shells: a thread (sync client) or a task per event loop (asyncio client only).

Both drive `subscription.Subscriptions`: ask it for a plan, run it on a pub/sub connection
of their own, report what happened, then block until a message, a poke from `listen()`, or
the plan's deadline. The connection is built from the client's settings but with redis-py's
own retries off, so each failure reaches the state machine instead of being replayed
(and blocked on) inside redis-py.

Where the connection goes:
- a plain client: its server; a Sentinel-managed client (`Sentinel.master_for`): the
  master the sentinels name at each connect (redis-py's SentinelManagedConnection, whose
  settings the connection copies), so after a failover the reconnect finds the new master;
- a cluster client with plain PUBLISH/SUBSCRIBE (Redis < 7): the master serving the first
  channel, looked up again after a failure; any node sees every message;
- a cluster client with sharded pub/sub (Redis >= 7, `sharded()` true): one connection per
  node, each channel SSUBSCRIBEd on the master of its slot, looked up again after a
  failure. A node that drops a channel (its slot moved) counts as a failed connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import selectors
import socket
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.client
import redis.client
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from .notify import Wakeups
from .subscription import Subscriptions

__all__ = ['TaskSubscriber', 'ThreadSubscriber']

log = logging.getLogger('py_cachify')

# How long a read may take once the socket is readable: a message split across TCP
# segments is read whole, not mistaken for a failure.
_READ_GRACE = 0.01
# Clients without a real socket to block on (fakeredis) are polled this often instead.
_POLL = 0.05
# How long close() waits for the listener thread (it may be inside a connect).
_JOIN = 10.0
_CONNECT_TIMEOUT = 5.0


def _own_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The client's connection settings for a connection the subscriber owns."""
    own = {k: v for k, v in kwargs.items() if k != 'maint_notifications_pool_handler'}
    own['retry'] = Retry(NoBackoff(), 0)
    # No health-check PINGs: their replies would be swallowed by get_message and hide
    # buffered messages from the drain loop; a lost connection shows as a failed read.
    own['health_check_interval'] = 0
    own['socket_connect_timeout'] = kwargs.get('socket_connect_timeout') or _CONNECT_TIMEOUT
    return own


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _handle(machine: Subscriptions, wakeups: Wakeups, message: dict[str, Any]) -> None:
    kind = message['type']
    if kind in ('subscribe', 'ssubscribe'):
        machine.confirmed(_text(message['channel']))
    elif kind in ('message', 'smessage'):
        wakeups.deliver(_text(message['channel']), _text(message['data']))
    elif kind == 'pong':
        machine.ponged()
    elif kind == 'sunsubscribe' and machine.state(_text(message['channel'])) is not None:
        # Not asked for (idle channels leave the machine before they are unsubscribed): the
        # node gave the channel's slot away, to a failed-over or resharded master.
        raise redis.ConnectionError(f'the server dropped the subscription to {_text(message["channel"])}')


class _SyncLink:
    """The thread subscriber's own pub/sub connections: one, or one per node with sharded pub/sub."""

    def __init__(self, client: Any, refresh: bool, sharded: bool) -> None:
        self._client = client
        self._cluster: Any = client if isinstance(client, RedisCluster) else None  # redis-py's cluster is untyped
        if self._cluster is not None and refresh:
            self._cluster.nodes_manager.initialize()
        self.sharded = sharded and self._cluster is not None
        self._links: dict[str, tuple[redis.ConnectionPool, Any]] = {}

    def _pubsub(self, channel: str, make: bool = True) -> Any:
        """The connection `channel` goes on (None if it has none and `make` is False)."""
        name, node = '', None
        if self._cluster is not None:
            node = self._cluster.get_node_from_key(channel)
            name = node.name if self.sharded else ''
        if name not in self._links:
            if not make:
                return None
            source: Any = (
                self._client.connection_pool
                if node is None
                else self._cluster.get_redis_connection(node).connection_pool
            )
            pool = redis.ConnectionPool(
                connection_class=source.connection_class, **_own_kwargs(source.connection_kwargs)
            )
            self._links[name] = (pool, redis.client.PubSub(pool))
        return self._links[name][1]

    @property
    def pubsubs(self) -> list[Any]:
        return [pubsub for _, pubsub in self._links.values()]

    def subscribe(self, channels: list[str]) -> None:
        if not self.sharded:
            self._pubsub(channels[0]).subscribe(*channels)
            return
        for channel in channels:  # one by one: channels of different slots may not share a command
            self._pubsub(channel).ssubscribe(channel)

    def unsubscribe(self, channels: list[str]) -> None:
        for channel in channels:
            pubsub = self._pubsub(channel, make=False)
            if pubsub is not None:
                pubsub.sunsubscribe(channel) if self.sharded else pubsub.unsubscribe(channel)

    def ping(self) -> None:
        for pubsub in self.pubsubs:
            pubsub.ping()

    def sockets(self) -> list[socket.socket] | None:
        """The sockets to block on; None if some connection has no real one (poll it instead)."""
        socks = [getattr(pubsub.connection, '_sock', None) for pubsub in self.pubsubs]
        return None if not all(isinstance(s, socket.socket) for s in socks) else socks  # type: ignore[return-value]

    def close(self) -> None:
        for pool, pubsub in self._links.values():
            with contextlib.suppress(Exception):
                pubsub.reset()
            with contextlib.suppress(Exception):
                pool.disconnect()


class ThreadSubscriber:
    """Receives release messages on a sync client's pub/sub, in one daemon thread started on first use.

    `listen()` only records the request and pokes the thread (a socket pair), so it never
    blocks. After `close()` it does nothing: waiters then rely on their fallback poll.
    """

    def __init__(self, client: Any, wakeups: Wakeups, sharded: Callable[[], bool] = lambda: False) -> None:
        self._client = client
        self._wakeups = wakeups
        self._sharded = sharded
        self._machine = Subscriptions(wakeups)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._poke_pair: tuple[socket.socket, socket.socket] | None = None
        _live.add(self)

    @property
    def machine(self) -> Subscriptions:
        """The subscription state this thread drives."""
        return self._machine

    @property
    def thread(self) -> threading.Thread | None:
        """The listener thread, once started."""
        return self._thread

    def listen(self, channel: str) -> None:
        """Have `channel` subscribed from now on. Never blocks, never raises."""
        try:
            if not self._machine.request(channel):
                return
            with self._lock:
                if self._thread is None:
                    self._poke_pair = socket.socketpair()
                    for end in self._poke_pair:
                        end.setblocking(False)
                    self._thread = threading.Thread(
                        target=self._run,
                        args=(self._machine, self._poke_pair[0]),
                        name='py_cachify-wakeups',
                        daemon=True,
                    )
                    self._thread.start()
                else:
                    self._poke()
        except Exception:
            log.warning('py_cachify wake-ups: could not listen on %s; waiters poll instead', channel, exc_info=True)

    def close(self) -> None:
        """Stop the thread, wait for it, and close its connection. Later `listen()` does nothing."""
        self._machine.close()
        with self._lock:
            thread, pair, self._thread, self._poke_pair = self._thread, self._poke_pair, None, None
            if pair is not None:
                with contextlib.suppress(OSError):
                    pair[1].send(b'\0')
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN)
            if thread.is_alive():
                log.warning('py_cachify wake-ups: the listener thread did not stop within %s s', _JOIN)
        if pair is not None:
            for end in pair:
                end.close()

    async def aclose(self) -> None:
        """`close()` without blocking the event loop."""
        await asyncio.to_thread(self.close)

    def _poke(self) -> None:
        if self._poke_pair is not None:
            # A full buffer means the thread is poked already.
            with contextlib.suppress(OSError):
                self._poke_pair[1].send(b'\0')

    def _run(self, machine: Subscriptions, poked: socket.socket) -> None:
        link: _SyncLink | None = None
        try:
            while True:
                plan = machine.plan()
                if plan.stop:
                    return
                try:
                    if link is not None and (plan.disconnect or plan.connect):
                        link.close()
                        link = None
                    if plan.connect:
                        link = _SyncLink(self._client, plan.refresh, self._sharded())
                        machine.connected()
                    if link is not None:
                        if plan.unsubscribe:
                            link.unsubscribe(plan.unsubscribe)
                        if plan.subscribe:
                            link.subscribe(plan.subscribe)
                        if plan.ping:
                            link.ping()
                        self._drain(machine, link)
                except Exception as exc:
                    if link is not None:
                        link.close()
                        link = None
                    machine.failed(exc)
                    continue
                self._block(poked, link, plan.wait)
        finally:
            if link is not None:
                link.close()

    def _drain(self, machine: Subscriptions, link: _SyncLink) -> None:
        # Everything already read into redis-py's buffer must be handled before blocking on
        # the socket again: select() cannot see it.
        pubsubs = link.pubsubs
        if len(pubsubs) == 1:
            while (message := pubsubs[0].get_message(timeout=_READ_GRACE)) is not None:
                _handle(machine, self._wakeups, message)
            return
        # Several connections (sharded pub/sub): a grace wait on one would delay the others'
        # messages, so sweep them all without waiting until a sweep finds nothing. A reply
        # whose first bytes arrived is still read whole (the socket blocks for the rest).
        found = True
        while found:
            found = False
            for pubsub in pubsubs:
                while (message := pubsub.get_message(timeout=0)) is not None:
                    found = True
                    _handle(machine, self._wakeups, message)

    def _block(self, poked: socket.socket, link: _SyncLink | None, wait: float | None) -> None:
        socks = link.sockets() if link is not None else []
        if socks is None:
            wait = _POLL if wait is None else min(wait, _POLL)
        with selectors.DefaultSelector() as selector:
            selector.register(poked, selectors.EVENT_READ)
            for sock in socks or ():
                selector.register(sock, selectors.EVENT_READ)
            selector.select(wait)
        with contextlib.suppress(OSError):
            while poked.recv(4096):
                pass

    def _after_fork(self) -> None:
        # The thread did not survive the fork; its connection and lock are the parent's.
        self._lock = threading.Lock()
        self._thread = None
        if self._poke_pair is not None:
            for end in self._poke_pair:
                with contextlib.suppress(OSError):
                    end.close()
            self._poke_pair = None
        self._machine.after_fork()


class _AsyncLink:
    """A task subscriber's own pub/sub connections: one, or one per node with sharded pub/sub."""

    def __init__(self, client: Any, sharded: bool) -> None:
        self._client = client
        self._cluster: Any = client if isinstance(client, AsyncRedisCluster) else None
        self.sharded = sharded and self._cluster is not None
        self._links: dict[str, tuple[redis.asyncio.ConnectionPool, Any]] = {}
        # One pending read per connection; `message()` hands out whichever completes first.
        self._reads: dict[str, asyncio.Future[Any]] = {}
        # Set when channels were subscribed, maybe on a new connection (a node not listened to
        # yet): a pending `message()` reads it too, or its messages would wait for another's.
        self._added = asyncio.Event()

    @classmethod
    async def open(cls, client: Any, refresh: bool, sharded: bool) -> _AsyncLink:
        if isinstance(client, AsyncRedisCluster):
            cluster: Any = client
            if refresh or getattr(cluster, '_initialize', False):
                await cluster.nodes_manager.initialize()
        return cls(client, sharded)

    def _pubsub(self, channel: str, make: bool = True) -> Any:
        name = ''
        connection_class, kwargs = None, None
        if self._cluster is not None:
            node = self._cluster.get_node_from_key(channel)
            name = node.name if self.sharded else ''
            connection_class, kwargs = node.connection_class, node.connection_kwargs
        else:
            connection_class = self._client.connection_pool.connection_class
            kwargs = self._client.connection_pool.connection_kwargs
        if name not in self._links:
            if not make:
                return None
            pool = redis.asyncio.ConnectionPool(connection_class=connection_class, **_own_kwargs(kwargs))
            self._links[name] = (pool, redis.asyncio.client.PubSub(pool))
        return self._links[name][1]

    async def subscribe(self, channels: list[str]) -> None:
        if not self.sharded:
            await self._pubsub(channels[0]).subscribe(*channels)
        else:
            for channel in channels:  # one by one: channels of different slots may not share a command
                await self._pubsub(channel).ssubscribe(channel)
        self._added.set()  # only now has a new connection one to read from

    async def unsubscribe(self, channels: list[str]) -> None:
        for channel in channels:
            pubsub = self._pubsub(channel, make=False)
            if pubsub is not None:
                await (pubsub.sunsubscribe(channel) if self.sharded else pubsub.unsubscribe(channel))

    async def ping(self) -> None:
        for _, pubsub in self._links.values():
            await pubsub.ping()

    async def message(self) -> Any:
        """The next message (or None) from any of the connections; raises what a read raised."""
        while True:
            self._added.clear()
            for name, (_, pubsub) in self._links.items():
                if name not in self._reads:
                    self._reads[name] = asyncio.ensure_future(pubsub.get_message(timeout=None))
            added = asyncio.ensure_future(self._added.wait())
            try:
                done, _ = await asyncio.wait({*self._reads.values(), added}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await _cancel(added)
            ready = [name for name, read in self._reads.items() if read in done]
            if ready:
                return self._reads.pop(ready[0]).result()

    async def aclose(self) -> None:
        for read in self._reads.values():
            await _cancel(read)
        self._reads.clear()
        for pool, pubsub in self._links.values():
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await pool.disconnect()


class _LoopSubscriber:
    """The task subscriber of one event loop."""

    def __init__(
        self,
        client: Any,
        wakeups: Wakeups,
        loop: asyncio.AbstractEventLoop,
        sharded: Callable[[], bool],
        loop_client: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self._client = client
        self._loop_client = loop_client
        self._wakeups = wakeups
        self._sharded = sharded
        self.loop = loop
        self.machine = Subscriptions(wakeups)
        self._poked = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def done(self) -> bool:
        return self.task is not None and self.task.done()

    def listen(self, channel: str) -> None:
        if self.machine.request(channel):
            if self.task is None:
                self.task = self.loop.create_task(self._run(), name='py_cachify-wakeups')
            self._poked.set()

    def stop_soon(self) -> None:
        """Ask the task to stop (from any thread) without waiting for it."""
        self.machine.close()
        if not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self.loop.call_soon_threadsafe(self._poked.set)

    async def stop(self) -> None:
        """Stop the task and wait for it (on its own loop)."""
        self.machine.close()
        self._poked.set()
        if self.task is not None:
            await asyncio.wait({self.task})

    async def _run(self) -> None:
        machine = self.machine
        link: _AsyncLink | None = None
        reader: asyncio.Task[Any] | None = None
        poked: asyncio.Task[Any] | None = None
        try:
            while True:
                self._poked.clear()  # before planning: a request after this pokes again
                plan = machine.plan()
                if plan.stop:
                    return
                try:
                    if link is not None and (plan.disconnect or plan.connect):
                        await _cancel(reader)
                        reader = None
                        await link.aclose()
                        link = None
                    if plan.connect:
                        # This loop's own client (backends.loops): a cluster initializes on it,
                        # a Sentinel pool asks its own sentinels.
                        client = self._client if self._loop_client is None else await self._loop_client()
                        link = await _AsyncLink.open(client, plan.refresh, self._sharded())
                        machine.connected()
                    if link is not None:
                        if plan.unsubscribe:
                            await link.unsubscribe(plan.unsubscribe)
                        if plan.subscribe:
                            await link.subscribe(plan.subscribe)
                        if plan.ping:
                            await link.ping()
                        if reader is None:
                            reader = asyncio.ensure_future(link.message())
                except Exception as exc:
                    await _cancel(reader)
                    reader = None
                    if link is not None:
                        await link.aclose()
                        link = None
                    machine.failed(exc)
                    continue
                if poked is None or poked.done():
                    poked = asyncio.ensure_future(self._poked.wait())
                waiting = {poked} if reader is None else {poked, reader}
                done, _ = await asyncio.wait(waiting, timeout=plan.wait, return_when=asyncio.FIRST_COMPLETED)
                if reader is not None and reader in done:
                    finished, reader = reader, None
                    try:
                        message = finished.result()
                    except Exception as exc:
                        if link is not None:
                            await link.aclose()
                            link = None
                        machine.failed(exc)
                        continue
                    try:
                        if message is not None:
                            _handle(machine, self._wakeups, message)
                    except Exception as exc:
                        if link is not None:
                            await link.aclose()
                            link = None
                        machine.failed(exc)
        finally:
            await _cancel(reader)
            await _cancel(poked)
            if link is not None:
                await link.aclose()


async def _cancel(task: asyncio.Task[Any] | asyncio.Future[Any] | None) -> None:
    """Cancel a helper task and wait until it is done (its outcome is not wanted)."""
    if task is not None and not task.done():
        # redis-py's asyncio client can swallow a cancellation that lands mid-read (seen with
        # 8.1) and go on reading with no timeout: cancel again until the task is done.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
    elif task is not None and not task.cancelled():
        task.exception()  # mark it retrieved


class TaskSubscriber:
    """Receives release messages on an asyncio client's pub/sub: one task per running event loop.

    `listen()` must be called inside the event loop whose waiters it serves; it starts that
    loop's task on first use. A loop that closed (each `asyncio.run()`) takes its task with
    it: the task closes its connection when cancelled, and the next loop gets a new one.
    """

    def __init__(
        self,
        client: Any,
        wakeups: Wakeups,
        sharded: Callable[[], bool] = lambda: False,
        loop_client: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self._client = client
        self._wakeups = wakeups
        self._sharded = sharded
        self._loop_client = loop_client  # the running loop's client, if `client` is bound to one loop
        self._loops: dict[asyncio.AbstractEventLoop, _LoopSubscriber] = {}
        self._lock = threading.Lock()  # loops in several threads may share this subscriber
        self._closed = False
        _live.add(self)

    def subscriber(self) -> _LoopSubscriber | None:
        """The running loop's subscriber, if it has one."""
        with contextlib.suppress(RuntimeError):
            return self._loops.get(asyncio.get_running_loop())
        return None

    def listen(self, channel: str) -> None:
        """Have `channel` subscribed from now on, in the running loop. Never blocks, never raises."""
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop to run a task on: sync waiters need a sync client anyway
        try:
            with self._lock:
                sub = self._loops.get(loop)
                if sub is None or sub.done:
                    self._loops = {other: s for other, s in self._loops.items() if not other.is_closed()}
                    sub = self._loops[loop] = _LoopSubscriber(
                        self._client, self._wakeups, loop, self._sharded, self._loop_client
                    )
            sub.listen(channel)
        except Exception:
            log.warning('py_cachify wake-ups: could not listen on %s; waiters poll instead', channel, exc_info=True)

    def close(self) -> None:
        """Ask every loop's task to stop and close its connection (without waiting). Later `listen()` does nothing."""
        with self._lock:
            self._closed = True
            subs, self._loops = list(self._loops.values()), {}
        for sub in subs:
            sub.stop_soon()

    async def aclose(self) -> None:
        """Stop every loop's task; waits for the running loop's own, which closes its connection."""
        with self._lock:
            self._closed = True
            subs, self._loops = list(self._loops.values()), {}
        running = asyncio.get_running_loop()
        for sub in subs:
            if sub.loop is running:
                await sub.stop()
            else:
                sub.stop_soon()

    def _after_fork(self) -> None:
        # The parent's loops and connections are not the child's to use.
        self._lock = threading.Lock()
        self._loops = {}


_live: weakref.WeakSet[ThreadSubscriber | TaskSubscriber] = weakref.WeakSet()


def _reset_in_child() -> None:
    for subscriber in list(_live):
        subscriber._after_fork()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_reset_in_child)
