"""Give-backs that outlive an outage: releases retried in the background until they land.

A release (or the clean-up of an acquire that may have landed) that fails on a connection
error must not leave the slot taken until `slot_exp`: the caller gets its error at once,
and the calls are retried here, with backoff, until Redis answers them or the slot would
have expired anyway. Sync backends retry in one daemon thread that runs only while
something is pending; asyncio-only backends retry in tasks of the caller's loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from .errors import CachifyBackendError
from .ops import Call

__all__ = ['GiveBacks']

log = logging.getLogger('py_cachify')

_FIRST_DELAY, _MAX_DELAY = 0.05, 1.0


@dataclass
class _Pending:
    calls: list[Call]
    until: float | None  # time.monotonic() after which the slot has expired by itself
    pool: str
    # An acquire that timed out may still land when a frozen server wakes, possibly after
    # our first give-back was answered: give back once more, this long after that answer.
    recheck: float | None = None
    original: list[Call] = field(default_factory=list)
    delay: float = _FIRST_DELAY
    due: float = field(default_factory=time.monotonic)

    def expired(self, now: float) -> bool:
        return self.until is not None and now >= self.until

    def attempt(self, error: BaseException | None) -> bool:
        """Record one attempt at the first call; returns whether to try again later."""
        if error is None:
            self.calls.pop(0)
            self.delay = _FIRST_DELAY
            self.due = time.monotonic()
            if not self.calls and self.recheck is not None:
                self.calls, self.due, self.recheck = list(self.original), self.due + self.recheck, None
            return bool(self.calls)
        if not _transient(error):
            log.warning('py_cachify: giving back a slot of pool %r failed for good', self.pool, exc_info=error)
            return False
        self.due = time.monotonic() + self.delay
        self.delay = min(self.delay * 2, _MAX_DELAY)
        return True


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, CachifyBackendError) and exc.transient


class GiveBacks:
    """Retries calls that give a slot back until each is answered or the slot has expired."""

    def __init__(self, run: Callable[[Call], object] | None, arun: Callable[[Call], Awaitable[object]]) -> None:
        self._run = run
        self._arun = arun
        self._reset()
        _live.add(self)

    def _reset(self) -> None:
        self._lock = threading.Condition()
        self._pending: list[_Pending] = []
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def add(self, calls: Sequence[Call], until: float | None, recheck: float | None = None) -> None:
        """Retry `calls`, in order, in the background (call from a thread or a running loop).

        With `recheck`, the first call is sent once more that many seconds after the last
        answer: for the clean-up of an acquire that may still be in flight to the server.
        """
        pending = _Pending(list(calls), until, calls[0].pool, recheck, list(calls))
        if self._run is None:
            task = asyncio.get_running_loop().create_task(self._retry_in_task(pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        with self._lock:
            if self._closed:
                return
            self._pending.append(pending)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._retry_in_thread, name='py_cachify-giveback', daemon=True)
                self._thread.start()
            self._lock.notify()

    def pending(self) -> int:
        """How many give-backs are still being retried."""
        with self._lock:
            return len(self._pending) + len(self._tasks)

    def close(self) -> None:
        """Stop retrying (what is still pending expires by itself) and end the thread."""
        with self._lock:
            self._closed = True
            dropped, self._pending = self._pending, []
            self._lock.notify()
            thread = self._thread
        for task in self._tasks:
            task.get_loop().call_soon_threadsafe(task.cancel)
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if dropped:
            log.warning('py_cachify: closed with %d slot(s) not given back; they expire by themselves', len(dropped))

    async def aclose(self) -> None:
        """`close`, then wait for the retrying tasks of the running loop to end."""
        self.close()
        mine = [t for t in self._tasks if t.get_loop() is asyncio.get_running_loop()]
        if mine:
            await asyncio.wait(mine)

    def _retry_in_thread(self) -> None:
        assert self._run is not None
        while True:
            with self._lock:
                now = time.monotonic()
                self._pending = [p for p in self._pending if not _gave_up(p, now)]
                if self._closed or not self._pending:
                    return  # nothing left: the thread ends, the next add() starts another
                pending = min(self._pending, key=lambda p: p.due)
                if pending.due > now:
                    self._lock.wait(pending.due - now)
                    continue
            try:
                self._run(pending.calls[0])
                error: BaseException | None = None
            except Exception as exc:
                error = exc
            with self._lock:
                if not pending.attempt(error) and pending in self._pending:
                    self._pending.remove(pending)
                    if error is None:
                        log.info('py_cachify: gave back a slot of pool %r after an outage', pending.pool)

    async def _retry_in_task(self, pending: _Pending) -> None:
        while not _gave_up(pending, time.monotonic()):
            await asyncio.sleep(max(0.0, pending.due - time.monotonic()))
            try:
                await self._arun(pending.calls[0])
                error: BaseException | None = None
            except Exception as exc:
                error = exc
            if not pending.attempt(error):
                return


def _gave_up(pending: _Pending, now: float) -> bool:
    if pending.expired(now):
        log.warning('py_cachify: could not give back a slot of pool %r before it expired', pending.pool)
        return True
    return False


_live: weakref.WeakSet[GiveBacks] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent's pending give-backs are the parent's to finish; its thread and lock are not ours.
    for give_backs in list(_live):
        give_backs._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)
