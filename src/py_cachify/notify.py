"""Wake-ups for waiters: which local waiter a release message (or a new subscription) wakes.

A release publishes, atomically with it, the id of the one waiter it wakes in the whole
fleet (the queued waiter the freed slot is owed to, else one waiter out of the queue), or ''
when any waiter may take it; a named one comes to the mailbox of the waiter's process
(see `mailbox`), which is subscribed beside the channel. One subscriber connection per
backend (see `subscribers`) receives them for all the waiters of the process, so hundreds
of waiting tasks cost one connection, not hundreds. The subscribers also say here which
channels they hear, so a waiter knows whether it may rely on a message (and poll seldom)
or must poll.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable

from .mailbox import mailbox, pool_channel

__all__ = ['IDLE_UNSUBSCRIBE', 'Wakeups']

log = logging.getLogger('py_cachify')

# A channel nobody has waited on for this long is unsubscribed, so pools keyed per user
# do not pile up subscriptions.
IDLE_UNSUBSCRIBE = 30.0


class Wakeups:
    """Which local waiter each message wakes. Thread-safe; shared by sync and async waiters.

    Every `wake` callback must be safe to call from any thread and must not block. With
    `direct`, messages are handed over by a call in this process (the embedded store), never
    lost: every channel counts as heard.
    """

    def __init__(self, direct: bool = False) -> None:
        self._direct = direct
        self._lock = threading.Lock()
        self._waiters: dict[str, dict[str, Callable[[], object]]] = {}
        self._last_used: dict[str, float] = {}
        # Channel -> how many subscriptions deliver its messages now (one per event loop's
        # subscriber at most): kept by `subscription.Subscriptions`.
        self._heard: dict[str, int] = {}
        _live.add(self)

    def heard(self, channel: str) -> bool:
        """Whether messages for `channel` reach this process now: subscriptions to it and to this
        process's mailbox on it are confirmed, not failed since."""
        with self._lock:
            return self._direct or (channel in self._heard and mailbox(channel) in self._heard)

    def hear(self, channel: str, on: bool) -> None:
        """A subscription to `channel` (or a mailbox) started (`on`) or stopped delivering its messages."""
        with self._lock:
            count = self._heard.get(channel, 0) + (1 if on else -1)
            if count > 0:
                self._heard[channel] = count
            else:
                self._heard.pop(channel, None)

    def add(self, channel: str, slot: str, wake: Callable[[], object]) -> None:
        """Register waiter `slot` on `channel`."""
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
        """Wake the waiter a message names, or the longest-waiting one when it names none.

        `channel` is where it came: a wake-up channel, or this process's mailbox on one.
        """
        channel = pool_channel(channel)
        with self._lock:
            waiters = self._waiters.get(channel)
            if not waiters:
                return
            wake = waiters.get(payload) if payload else next(iter(waiters.values()))
        if wake is not None:
            _call(wake)

    def wake_all(self, channel: str) -> None:
        """Wake every waiter of `channel` (or of a mailbox's channel) once: messages may have been missed."""
        channel = pool_channel(channel)
        with self._lock:
            wakes = list(self._waiters.get(channel, {}).values())
        for wake in wakes:
            _call(wake)

    def waiting(self, channel: str) -> bool:
        """Whether some waiter is registered on `channel` (or on the channel of a mailbox) now."""
        with self._lock:
            return pool_channel(channel) in self._waiters

    def idle(self) -> list[str]:
        """Channels with no waiter for a while, and this process's mailboxes on them: to unsubscribe (and forget)."""
        cutoff = time.monotonic() - IDLE_UNSUBSCRIBE
        with self._lock:
            idle = [c for c, used in self._last_used.items() if used < cutoff and c not in self._waiters]
            for channel in idle:
                del self._last_used[channel]
        return [name for channel in idle for name in (channel, mailbox(channel))]

    def _after_fork(self) -> None:
        # Only the forking thread lives on in the child: the other threads' waiters are
        # gone (an unnamed release must not be owed to one of them), and the lock may
        # have been held by one of them at fork time.
        self._lock = threading.Lock()
        self._waiters = {}
        self._last_used = {}
        self._heard = {}  # the parent's subscriptions are not the child's


def _call(wake: Callable[[], object]) -> None:
    # A waiter whose event loop has just closed cannot be woken; the listener that calls
    # this must not take that for a failure of its own.
    try:
        wake()
    except Exception:
        log.debug('py_cachify: a waiter could not be woken', exc_info=True)


_live: weakref.WeakSet[Wakeups] = weakref.WeakSet()


def _reset_in_child() -> None:
    for wakeups in list(_live):
        wakeups._after_fork()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_reset_in_child)
