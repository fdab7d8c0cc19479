"""Auto-renewal: keep a held slot alive while its holder works, in a thread or a task.

One rule (`Renewal`) decides what each renewal outcome means; a thread shell and a task
shell only run it. A renewal never raises into the holder: a failed renewal is logged
and tried again next time, and a lost slot (it expired before a renewal reached it) goes
to `on_lost(key)` or to a logged warning, after which renewing stops. Stopping waits for
a renewal in flight, so a renewal never races the release that follows it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ['EVERY', 'OnLost', 'Renewal', 'TaskRenewer', 'ThreadRenewer', 'stop_all']

log = logging.getLogger('py_cachify')

EVERY = 1 / 3  # of the slot's lifetime: two renewals can fail before the slot is lost

OnLost = Callable[[str], Any]


class State(enum.Enum):
    RENEWING = 'renewing'
    STOPPED = 'stopped'  # the holder is done with the slot: nothing more to report
    LOST = 'lost'  # the slot expired before a renewal reached it


class Renewal:
    """The renewal rule for one held slot, shared by both shells."""

    def __init__(self, key: str, every: float, on_lost: OnLost | None, lost: Callable[[], object]) -> None:
        self.key = key
        self.every = every
        self.state = State.RENEWING
        self._on_lost = on_lost
        self._mark_lost = lost

    def stop(self) -> None:
        if self.state is State.RENEWING:
            self.state = State.STOPPED

    def outcome(self, kept: bool | None, error: BaseException | None = None) -> bool:
        """Record one renewal's outcome; returns whether to keep renewing."""
        if self.state is not State.RENEWING:
            return False  # stopped while the renewal was in flight: its answer means nothing now
        if error is not None:
            log.warning('py_cachify: renewing a slot of pool %r failed; retrying', self.key, exc_info=error)
            return True
        if kept:
            return True
        self.state = State.LOST
        self._mark_lost()
        try:
            if self._on_lost is not None:
                self._on_lost(self.key)
            else:
                log.warning('py_cachify: lost the slot of pool %r while running (it expired)', self.key)
        except Exception:
            log.exception('py_cachify: on_lost for pool %r raised', self.key)
        return False


class ThreadRenewer:
    """Runs a `Renewal` in a daemon thread, calling `extend` every `every` seconds."""

    def __init__(self, renewal: Renewal, extend: Callable[[], bool], owner: object) -> None:
        self._renewal = renewal
        self._extend = extend
        self.owner = owner
        _live.add(self)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f'py_cachify-renew-{renewal.key}', daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._renewal.every):
            try:
                kept, error = self._extend(), None
            except Exception as exc:
                kept, error = None, exc
            if not self._renewal.outcome(kept, error):
                return

    def stop(self) -> None:
        """Stop renewing; returns once no renewal is in flight."""
        self._renewal.stop()
        self._stopped.set()
        if self._thread is not threading.current_thread():  # on_lost may release from the renewer itself
            self._thread.join()

    async def astop(self) -> None:
        """`stop` without blocking the event loop."""
        self._renewal.stop()
        self._stopped.set()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)


class TaskRenewer:
    """Runs a `Renewal` in a task of the running loop, awaiting `extend` every `every` seconds."""

    def __init__(self, renewal: Renewal, extend: Callable[[], Awaitable[bool]], owner: object) -> None:
        self._renewal = renewal
        self._extend = extend
        self.owner = owner
        _live.add(self)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._renewal.every)
            try:
                kept, error = await self._extend(), None
            except Exception as exc:
                kept, error = None, exc
            if not self._renewal.outcome(kept, error):
                return

    def stop(self) -> None:
        """Stop renewing (from sync code: a renewal in flight is cancelled, its answer ignored)."""
        self._renewal.stop()
        loop = self._task.get_loop()
        if not loop.is_closed():
            loop.call_soon_threadsafe(self._task.cancel)

    async def astop(self) -> None:
        """Stop renewing; returns once no renewal is in flight."""
        self._renewal.stop()
        if self._task is asyncio.current_task():
            return
        self._task.cancel()
        # wait(), not await: the renewer's CancelledError is its own, while ours still reaches us.
        await asyncio.wait([self._task])


_live: weakref.WeakSet[ThreadRenewer | TaskRenewer] = weakref.WeakSet()


def stop_all(owner: object) -> None:
    """Stop every renewer of `owner` (a backend being closed); their slots then expire unless released."""
    for renewer in list(_live):
        if renewer.owner is owner:
            renewer.stop()


def _after_fork_in_child() -> None:
    # The parent's renewers keep the parent's slots; the child has none of their threads.
    _live.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
