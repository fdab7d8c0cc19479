"""The wake-up subscription state machine: what one subscriber connection must do next, no I/O.

Per channel: REQUESTED (a waiter asked; not sent, or sent on a connection that was lost)
-> SENT (SUBSCRIBE written) -> SUBSCRIBED (the server confirmed) -> REQUESTED again when
the connection is lost. A channel nobody waited on for `IDLE_UNSUBSCRIBE` seconds is
unsubscribed and forgotten. Entering SUBSCRIBED wakes the channel's waiters once, so a
release published before the subscription took effect is never waited out.

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

from .notify import IDLE_UNSUBSCRIBE, Wakeups

__all__ = ['Plan', 'State', 'Subscriptions']

log = logging.getLogger('py_cachify')

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
        self._next_idle_check = clock() + IDLE_UNSUBSCRIBE

    @property
    def closed(self) -> bool:
        """Whether `close()` was called: the shell stops and requests are ignored."""
        return self._closed

    def state(self, channel: str) -> State | None:
        """Where `channel` stands (None: not requested)."""
        with self._lock:
            return self._channels.get(channel)

    def request(self, channel: str) -> bool:
        """A waiter wants messages on `channel`; True if the shell has something new to do."""
        with self._lock:
            if self._closed or channel in self._channels:
                return False
            self._channels[channel] = State.REQUESTED
            return True

    def plan(self) -> Plan:
        """The next steps; marks the channels it asks to subscribe as SENT."""
        with self._lock:
            if self._closed:
                return Plan(stop=True)
            now = self._clock()
            plan = Plan()
            if now >= self._next_idle_check:
                self._next_idle_check = now + IDLE_UNSUBSCRIBE
                plan.unsubscribe = self._forget_idle()
            if not self._channels:
                # Nothing to listen to: no connection is kept, and the shell sleeps until poked.
                plan.disconnect, plan.unsubscribe = self._connected, []
                self._connected = False
                return plan
            if not self._connected:
                plan.unsubscribe = []
                if now < self._retry_at:
                    plan.wait = self._retry_at - now
                    return plan
                plan.connect, plan.refresh = True, self._failures > 0
            plan.subscribe = [c for c, state in self._channels.items() if state is State.REQUESTED]
            for channel in plan.subscribe:
                self._channels[channel] = State.SENT
            plan.wait = max(0.0, self._next_idle_check - now)
            return plan

    def connected(self) -> None:
        """The shell opened a connection (the plan's SUBSCRIBE goes out on it next)."""
        with self._lock:
            self._connected = True

    def confirmed(self, channel: str) -> None:
        """The server confirmed SUBSCRIBE `channel`: wake its waiters, who may have missed a release."""
        with self._lock:
            if channel not in self._channels:
                return  # unsubscribed meanwhile as idle
            self._channels[channel] = State.SUBSCRIBED
            self._failures = 0
            recovered, self._outage = self._outage, False
        if recovered:
            log.info('py_cachify wake-ups: subscribed again; waiters are woken by releases again')
        self._wakeups.wake_all(channel)

    def failed(self, exc: BaseException) -> None:
        """The connection or a command on it failed: every channel must be subscribed again, later."""
        with self._lock:
            self._connected = False
            for channel in self._channels:
                self._channels[channel] = State.REQUESTED
            self._failures += 1
            self._retry_at = self._clock() + min(_MAX_RETRY, _FIRST_RETRY * 2 ** (self._failures - 1))
            started, self._outage = not self._outage, True
        if started:
            # Once per outage, not per retry: waiters keep going on their fallback poll.
            log.warning('py_cachify wake-ups: subscriber failed (%s: %s); retrying', type(exc).__name__, exc)

    def close(self) -> None:
        """Stop: forget every channel; later requests are ignored."""
        with self._lock:
            self._closed = True
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

    def _forget_idle(self) -> list[str]:
        """Drop channels nobody waits on; returns those to UNSUBSCRIBE on the live connection."""
        dropped = []
        for channel in self._wakeups.idle():
            # A waiter that registered since `idle()` looked keeps its channel: it requested
            # it before this check, or will request it again after.
            if channel not in self._channels or self._wakeups.waiting(channel):
                continue
            if self._channels.pop(channel) is not State.REQUESTED:
                dropped.append(channel)
        return dropped
