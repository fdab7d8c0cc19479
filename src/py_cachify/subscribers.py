"""The subscriber shells: a thread (sync client) or a task per event loop (asyncio client only).

Both drive `subscription.Subscriptions`: ask it for a plan, run it on a pub/sub connection
of their own, report what happened, then block until a message, a poke from `listen()`, or
the plan's deadline. The connection is built from the client's settings but with redis-py's
own retries off, so each failure reaches the state machine instead of being replayed
(and blocked on) inside redis-py; a cluster client's connection goes to the master serving
the first channel, looked up again after a failure (the master may have failed over).

Plain PUBLISH/SUBSCRIBE: on a cluster any node sees every message.
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
    if kind == 'subscribe':
        machine.confirmed(_text(message['channel']))
    elif kind == 'message':
        wakeups.deliver(_text(message['channel']), _text(message['data']))
    elif kind == 'pong':
        machine.ponged()


class _SyncLink:
    """One pub/sub connection of the thread subscriber's own."""

    def __init__(self, client: Any, channel: str, refresh: bool) -> None:
        source: Any = client.connection_pool if not isinstance(client, RedisCluster) else None
        if source is None:
            cluster: Any = client  # redis-py's cluster methods are untyped
            if refresh:
                cluster.nodes_manager.initialize()
            source = cluster.get_redis_connection(cluster.get_node_from_key(channel)).connection_pool
        self._pool = redis.ConnectionPool(
            connection_class=source.connection_class, **_own_kwargs(source.connection_kwargs)
        )
        self.pubsub: Any = redis.client.PubSub(self._pool)

    def socket(self) -> socket.socket | None:
        """The socket to block on, if the connection has a real one."""
        sock = getattr(self.pubsub.connection, '_sock', None)
        return sock if isinstance(sock, socket.socket) else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.pubsub.reset()
        with contextlib.suppress(Exception):
            self._pool.disconnect()


class ThreadSubscriber:
    """Receives release messages on a sync client's pub/sub, in one daemon thread started on first use.

    `listen()` only records the request and pokes the thread (a socket pair), so it never
    blocks. After `close()` it does nothing: waiters then rely on their fallback poll.
    """

    def __init__(self, client: Any, wakeups: Wakeups) -> None:
        self._client = client
        self._wakeups = wakeups
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
                        link = _SyncLink(self._client, plan.subscribe[0], plan.refresh)
                        machine.connected()
                    if link is not None:
                        if plan.unsubscribe:
                            link.pubsub.unsubscribe(*plan.unsubscribe)
                        if plan.subscribe:
                            link.pubsub.subscribe(*plan.subscribe)
                        if plan.ping:
                            link.pubsub.ping()
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
        while (message := link.pubsub.get_message(timeout=_READ_GRACE)) is not None:
            _handle(machine, self._wakeups, message)

    def _block(self, poked: socket.socket, link: _SyncLink | None, wait: float | None) -> None:
        sock = link.socket() if link is not None else None
        if link is not None and sock is None:
            wait = _POLL if wait is None else min(wait, _POLL)
        with selectors.DefaultSelector() as selector:
            selector.register(poked, selectors.EVENT_READ)
            if sock is not None:
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
    """One pub/sub connection of a task subscriber's own."""

    def __init__(self, pool: redis.asyncio.ConnectionPool) -> None:
        self._pool = pool
        self.pubsub: Any = redis.asyncio.client.PubSub(pool)

    @classmethod
    async def open(cls, client: Any, channel: str, refresh: bool) -> _AsyncLink:
        if isinstance(client, AsyncRedisCluster):
            cluster: Any = client
            if refresh or getattr(cluster, '_initialize', False):
                await cluster.nodes_manager.initialize()
            node = cluster.get_node_from_key(channel)
            connection_class, kwargs = node.connection_class, node.connection_kwargs
        else:
            connection_class, kwargs = client.connection_pool.connection_class, client.connection_pool.connection_kwargs
        return cls(redis.asyncio.ConnectionPool(connection_class=connection_class, **_own_kwargs(kwargs)))

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()
        with contextlib.suppress(Exception):
            await self._pool.disconnect()


class _LoopSubscriber:
    """The task subscriber of one event loop."""

    def __init__(self, client: Any, wakeups: Wakeups, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._wakeups = wakeups
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
                        link = await _AsyncLink.open(self._client, plan.subscribe[0], plan.refresh)
                        machine.connected()
                    if link is not None:
                        if plan.unsubscribe:
                            await link.pubsub.unsubscribe(*plan.unsubscribe)
                        if plan.subscribe:
                            await link.pubsub.subscribe(*plan.subscribe)
                        if plan.ping:
                            await link.pubsub.ping()
                        if reader is None:
                            reader = asyncio.ensure_future(link.pubsub.get_message(timeout=None))
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
                    if message is not None:
                        _handle(machine, self._wakeups, message)
        finally:
            await _cancel(reader)
            await _cancel(poked)
            if link is not None:
                await link.aclose()


async def _cancel(task: asyncio.Task[Any] | asyncio.Future[Any] | None) -> None:
    """Cancel a helper task and wait until it is done (its outcome is not wanted)."""
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait({task})
    elif task is not None and not task.cancelled():
        task.exception()  # mark it retrieved


class TaskSubscriber:
    """Receives release messages on an asyncio client's pub/sub: one task per running event loop.

    `listen()` must be called inside the event loop whose waiters it serves; it starts that
    loop's task on first use. A loop that closed (each `asyncio.run()`) takes its task with
    it: the task closes its connection when cancelled, and the next loop gets a new one.
    """

    def __init__(self, client: Any, wakeups: Wakeups) -> None:
        self._client = client
        self._wakeups = wakeups
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
                    sub = self._loops[loop] = _LoopSubscriber(self._client, self._wakeups, loop)
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
