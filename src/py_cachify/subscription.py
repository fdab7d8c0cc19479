"""The wake-up subscription state machine: what one subscriber connection must do next, no I/O.

A waiter's request subscribes two channels: its pool's, and this process's mailbox on it
(see `mailbox`). Per channel: REQUESTED (a waiter asked; not sent, or sent on a connection
that was lost) -> SENT (SUBSCRIBE written) -> SUBSCRIBED (the server confirmed) ->
REQUESTED again when the connection is lost. A channel nobody waited on for
`notify.IDLE_UNSUBSCRIBE` seconds is unsubscribed and forgotten, with its mailbox. Once a
channel and its mailbox are both SUBSCRIBED, the channel's waiters are woken once, so a
release published before the subscriptions took effect is never waited out. Entering and
leaving SUBSCRIBED is reported to `notify.Wakeups.hear`: a waiter polls seldom only while
some subscription hears its channel and mailbox.

Every `CHECK_EVERY` seconds the shell wakes even when nothing happens: to drop idle
channels, and to PING the connection; a PING still unanswered at the next check means the
connection died without a word (a NAT or load balancer that dropped it while idle), and
it is replaced like any failed one.

The thread and the asyncio shells in `subscribers` drive the same machine: each asks
`plan()` what to do, does it, and reports back (`connected`, `confirmed`, `failed`).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .mailbox import mailbox, pool_channel
from .notify import Wakeups

__all__ = ['CHECK_EVERY', 'Plan', 'State', 'Subscriptions']

log = logging.getLogger('py_cachify')

# How often an idle listener wakes: to forget idle channels and to PING its connection.
CHECK_EVERY = 30.0
# Retries after a failure: soon at first (a killed connection comes back at once), never
# slower than this, so wake-ups resume well within a second of the server answering again.
_FIRST_RETRY = 0.025
_MAX_RETRY = 0.5


class State(enum.Enum):
    """Where one channel's subscription stands."""

    REQUESTED = 'requested'
    SENT = 'sent'
    SUBSCRIBED = 'subscribed'


@dataclass
class Plan:
    """What the shell does next, in this order; then it waits up to `wait` seconds (None: until poked)."""

    stop: bool = False
    disconnect: bool = False
    connect: bool = False
    refresh: bool = False  # look the server up again before connecting (a cluster may have failed over)
    ping: bool = False  # PING the connection: its answer shows it is still alive
    unsubscribe: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)
    wait: float | None = None


class Subscriptions:
    """One subscriber connection's channels and link, with every transition in one place. Thread-safe."""

    def __init__(self, wakeups: Wakeups, clock: Callable[[], float] = time.monotonic) -> None:
        self._wakeups = wakeups
        self._clock = clock
        self._lock = threading.Lock()
        self._channels: dict[str, State] = {}
        self._connected = False
        self._closed = False
        self._failures = 0  # consecutive, since the last confirmed subscription
        self._retry_at = 0.0
        self._outage = False  # a failure was logged and no subscription has been confirmed since
        self._pinged = False  # a PING went out and its answer has not come back yet
        self._next_check = clock() + CHECK_EVERY

    @property
    def closed(self) -> bool:
        """Whether `close()` was called: the shell stops and requests are ignored."""
        return self._closed

    def state(self, channel: str) -> State | None:
        """Where `channel` stands (None: not requested)."""
        with self._lock:
            return self._channels.get(channel)

    def request(self, channel: str) -> bool:
        """A waiter wants messages for `channel`: on it, and in this process's mailbox on it.

        True if the shell has something new to do.
        """
        with self._lock:
            new = [name for name in (channel, mailbox(channel)) if name not in self._channels]
            if self._closed or not new:
                return False
            for name in new:
                self._channels[name] = State.REQUESTED
            return True

    def plan(self) -> Plan:
        """The next steps; marks the channels it asks to subscribe as SENT."""
        silent = started = False
        with self._lock:
            if self._closed:
                return Plan(stop=True)
            now = self._clock()
            plan = Plan()
            if now >= self._next_check:
                self._next_check = now + CHECK_EVERY
                plan.unsubscribe = self._forget_idle()
                if self._connected and self._channels:
                    silent, plan.ping, self._pinged = self._pinged, not self._pinged, True
            if silent:
                plan = Plan(disconnect=True, unsubscribe=[])
                started = self._fail(now)
            if not self._channels:
                # Nothing to listen to: no connection is kept, and the shell sleeps until poked.
                plan.disconnect, plan.unsubscribe = self._connected or plan.disconnect, []
                self._connected = False
                return plan
            if not self._connected:
                plan.unsubscribe, plan.ping = [], False
                if now < self._retry_at:
                    plan.wait = self._retry_at - now
                else:
                    plan.connect, plan.refresh = True, self._failures > 0
            if plan.connect or self._connected:
                plan.subscribe = [c for c, state in self._channels.items() if state is State.REQUESTED]
                for channel in plan.subscribe:
                    self._channels[channel] = State.SENT
                plan.wait = max(0.0, self._next_check - now)
        if silent and started:
            log.warning('py_cachify wake-ups: the subscriber connection stopped answering PING; reconnecting')
        return plan

    def connected(self) -> None:
        """The shell opened a connection (the plan's SUBSCRIBE goes out on it next)."""
        with self._lock:
            self._connected, self._pinged = True, False

    def ponged(self) -> None:
        """The connection answered a PING: it is alive."""
        with self._lock:
            self._pinged = False

    def confirmed(self, channel: str) -> None:
        """The server confirmed SUBSCRIBE `channel`: wake its waiters (they may have missed a release)."""
        with self._lock:
            if channel not in self._channels:
                return  # unsubscribed meanwhile as idle
            if self._channels[channel] is not State.SUBSCRIBED:
                self._wakeups.hear(channel, True)
            self._channels[channel] = State.SUBSCRIBED
            self._failures = 0
            recovered, self._outage = self._outage, False
        if recovered:
            log.info('py_cachify wake-ups: subscribed again; waiters are woken by releases again')
        # Once both a channel and the mailbox on it are heard: a message sent to either
        # before then may be lost, and one retry each covers both.
        if self._wakeups.heard(pool_channel(channel)):
            self._wakeups.wake_all(channel)

    def failed(self, exc: BaseException) -> None:
        """The connection or a command on it failed: every channel must be subscribed again, later."""
        with self._lock:
            started = self._fail(self._clock())
        if started:
            # Once per outage, not per retry: waiters keep going on their fallback poll.
            log.warning('py_cachify wake-ups: subscriber failed (%s: %s); retrying', type(exc).__name__, exc)

    def _fail(self, now: float) -> bool:
        """The connection is gone (lock held); True if this starts an outage."""
        self._connected, self._pinged = False, False
        for channel, state in self._channels.items():
            self._deaf(channel, state)
            self._channels[channel] = State.REQUESTED
        self._failures += 1
        self._retry_at = now + min(_MAX_RETRY, _FIRST_RETRY * 2 ** (self._failures - 1))
        started, self._outage = not self._outage, True
        return started

    def close(self) -> None:
        """Stop: forget every channel; later requests are ignored."""
        with self._lock:
            self._closed = True
            for channel, state in self._channels.items():
                self._deaf(channel, state)
            self._channels.clear()
            self._connected = False

    def after_fork(self) -> None:
        """In a forked child: nothing is subscribed, no connection is ours, no lock is held."""
        self._lock = threading.Lock()
        self._channels = {}
        self._connected = False
        self._failures = 0
        self._retry_at = 0.0
        self._outage = False
        self._pinged = False

    def _forget_idle(self) -> list[str]:
        """Drop channels nobody waits on; returns those to UNSUBSCRIBE on the live connection."""
        dropped = []
        for channel in self._wakeups.idle():
            # A waiter that registered since `idle()` looked keeps its channel: it requested
            # it before this check, or will request it again after.
            if channel not in self._channels or self._wakeups.waiting(channel):
                continue
            state = self._channels.pop(channel)
            self._deaf(channel, state)
            if state is not State.REQUESTED:
                dropped.append(channel)
        return dropped

    def _deaf(self, channel: str, state: State) -> None:
        """`channel` leaves `state` (lock held): if it was SUBSCRIBED, its messages stop reaching us."""
        if state is State.SUBSCRIBED:
            # Its waiters are not woken for this: those waiting now poll as if heard until
            # their wait ends (HEARD_POLL at most), the next ones poll often; a new
            # confirmation wakes them all.
            self._wakeups.hear(channel, False)
