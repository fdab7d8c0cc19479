"""Wake-ups for waiters: release messages routed to the waiters of this process.

A release publishes, atomically with it, the id of the queued waiter the freed slot is
owed to, or '' when any waiter may take it. One subscriber connection per backend (a
thread for sync clients, a task for asyncio clients) receives them for all the waiters
of the process, so hundreds of waiting tasks cost one connection, not hundreds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ['TaskSubscriber', 'ThreadSubscriber', 'Wakeups']

log = logging.getLogger('py_cachify')

# A channel nobody has waited on for this long is unsubscribed, so pools keyed per user
# do not pile up subscriptions.
_IDLE_UNSUBSCRIBE = 30.0
# How long a new waiter waits for its subscription to be confirmed before it relies on
# the fallback poll alone.
_CONFIRM_TIMEOUT = 5.0


class Wakeups:
    """Which local waiter each message wakes. Thread-safe; shared by sync and async waiters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, dict[str, Callable[[], object]]] = {}
        self._last_used: dict[str, float] = {}

    def add(self, channel: str, slot: str, wake: Callable[[], object]) -> None:
        """Register waiter `slot` on `channel`; `wake` must be safe to call from any thread."""
        with self._lock:
            self._waiters.setdefault(channel, {})[slot] = wake
            self._last_used[channel] = time.monotonic()

    def discard(self, channel: str, slot: str) -> None:
        """Forget waiter `slot`."""
        with self._lock:
            waiters = self._waiters.get(channel, {})
            waiters.pop(slot, None)
            if not waiters:
                self._waiters.pop(channel, None)
            self._last_used[channel] = time.monotonic()

    def deliver(self, channel: str, payload: str) -> None:
        """Wake the waiter a message names, or the longest-waiting one when it names none."""
        with self._lock:
            waiters = self._waiters.get(channel)
            if not waiters:
                return
            wake = waiters.get(payload) if payload else next(iter(waiters.values()))
        if wake is not None:
            wake()

    def idle(self) -> list[str]:
        """Channels with no waiter for a while: to unsubscribe (and forget)."""
        cutoff = time.monotonic() - _IDLE_UNSUBSCRIBE
        with self._lock:
            idle = [c for c, used in self._last_used.items() if used < cutoff and c not in self._waiters]
            for channel in idle:
                del self._last_used[channel]
        return idle


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ThreadSubscriber:
    """Receives release messages on a sync client's pub/sub, in one daemon thread."""

    def __init__(self, client: Any, wakeups: Wakeups) -> None:
        self._client = client
        self._wakeups = wakeups
        self._lock = threading.Lock()
        self._ready: dict[str, threading.Event] = {}
        self._requests: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def is_ready(self, channel: str) -> bool:
        """Whether `channel` is subscribed already (asyncio callers skip a thread hop then)."""
        ready = self._ready.get(channel)
        return ready is not None and ready.is_set()

    def ensure(self, channel: str) -> None:
        """Return once `channel` is subscribed (or after a bounded wait)."""
        with self._lock:
            ready = self._ready.get(channel)
            if ready is None:
                ready = self._ready[channel] = threading.Event()
                self._requests.put(channel)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name='py_cachify-wakeups', daemon=True)
                self._thread.start()
        ready.wait(_CONFIRM_TIMEOUT)

    def _run(self) -> None:
        pubsub = self._client.pubsub()
        next_idle_check = time.monotonic() + _IDLE_UNSUBSCRIBE
        while True:
            try:
                # With nothing subscribed, sleep until a waiter asks for a channel.
                requests = [self._requests.get()] if not pubsub.subscribed else []
                while not self._requests.empty():
                    requests.append(self._requests.get_nowait())
                if requests:
                    pubsub.subscribe(*requests)
                message = pubsub.get_message(timeout=0.01)
                if message is not None:
                    self._handle(message)
                if time.monotonic() >= next_idle_check:
                    next_idle_check = time.monotonic() + _IDLE_UNSUBSCRIBE
                    self._drop(pubsub, self._wakeups.idle())
            except Exception:
                # pub/sub reconnects and re-subscribes on its next call; until then the
                # waiters' fallback poll keeps them going.
                log.warning('py_cachify wake-up listener failed; retrying', exc_info=True)
                time.sleep(0.5)

    def _handle(self, message: dict[str, Any]) -> None:
        channel = _text(message['channel'])
        if message['type'] == 'subscribe':
            with self._lock:
                ready = self._ready.get(channel)
            if ready is not None:
                ready.set()
        elif message['type'] == 'message':
            self._wakeups.deliver(channel, _text(message['data']))

    def _drop(self, pubsub: Any, channels: list[str]) -> None:
        if channels:
            with self._lock:
                for channel in channels:
                    self._ready.pop(channel, None)
            pubsub.unsubscribe(*channels)


class TaskSubscriber:
    """Receives release messages on an asyncio client's pub/sub, in one task per event loop."""

    def __init__(self, client: Any, wakeups: Wakeups) -> None:
        self._client = client
        self._wakeups = wakeups
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._ready: dict[str, asyncio.Event] = {}
        self._subscribed = asyncio.Event()  # set when a channel is added: the idle listener sleeps on it

    async def ensure(self, channel: str) -> None:
        """Return once `channel` is subscribed (or after a bounded wait)."""
        if self._task is None or self._task.done() or self._task.get_loop() is not asyncio.get_running_loop():
            # A new loop (or a crashed listener) starts over with a fresh connection.
            self._pubsub = self._client.pubsub()
            self._ready, self._subscribed = {}, asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(self._pubsub, self._ready, self._subscribed))
        ready = self._ready.get(channel)
        if ready is None:
            ready = self._ready[channel] = asyncio.Event()
            await self._pubsub.subscribe(channel)
            self._subscribed.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ready.wait(), _CONFIRM_TIMEOUT)

    async def _run(self, pubsub: Any, ready: dict[str, asyncio.Event], subscribed: asyncio.Event) -> None:
        next_idle_check = time.monotonic() + _IDLE_UNSUBSCRIBE
        while True:
            try:
                if not pubsub.subscribed:
                    # Nothing to listen to: sleep until a waiter subscribes, not on a timer.
                    subscribed.clear()
                    await subscribed.wait()
                    continue
                message = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    channel = _text(message['channel'])
                    if message['type'] == 'subscribe' and channel in ready:
                        ready[channel].set()
                    elif message['type'] == 'message':
                        self._wakeups.deliver(channel, _text(message['data']))
                if time.monotonic() >= next_idle_check:
                    next_idle_check = time.monotonic() + _IDLE_UNSUBSCRIBE
                    idle = self._wakeups.idle()
                    if idle:
                        for channel in idle:
                            ready.pop(channel, None)
                        await pubsub.unsubscribe(*idle)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning('py_cachify wake-up listener failed; retrying', exc_info=True)
                await asyncio.sleep(0.5)
