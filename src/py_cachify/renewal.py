"""Auto-renewal: keep a held slot alive while its holder works, in a thread or a task.

A renewal never raises into the holder: a failed renewal is logged and tried again next
time, and a lost slot (it expired before a renewal reached it) goes to `on_lost(key)` or
to a logged warning, after which renewing stops.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ['EVERY', 'in_task', 'in_thread']

log = logging.getLogger('py_cachify')

EVERY = 1 / 3  # of the slot's lifetime: two renewals can fail before the slot is lost

OnLost = Callable[[str], Any]


def in_thread(every: float, extend: Callable[[], bool], key: str, on_lost: OnLost | None) -> Callable[[], object]:
    """Call `extend` every `every` seconds in a daemon thread; returns what stops it."""
    stopped = threading.Event()

    def renew() -> None:
        while not stopped.wait(every):
            try:
                kept = extend()
            except Exception:
                log.warning('py_cachify: renewing a slot of pool %r failed; retrying', key, exc_info=True)
                continue
            if not kept:
                return _lost(key, on_lost)

    threading.Thread(target=renew, name=f'py_cachify-renew-{key}', daemon=True).start()
    return stopped.set


def in_task(
    every: float, extend: Callable[[], Awaitable[bool]], key: str, on_lost: OnLost | None
) -> Callable[[], object]:
    """Await `extend` every `every` seconds in a task of the running loop; returns what stops it."""

    async def renew() -> None:
        while True:
            await asyncio.sleep(every)
            try:
                kept = await extend()
            except Exception:
                log.warning('py_cachify: renewing a slot of pool %r failed; retrying', key, exc_info=True)
                continue
            if not kept:
                return _lost(key, on_lost)

    task = asyncio.get_running_loop().create_task(renew())
    return task.cancel


def _lost(key: str, on_lost: OnLost | None) -> None:
    try:
        if on_lost is not None:
            on_lost(key)
        else:
            log.warning('py_cachify: lost the slot of pool %r while running (it expired)', key)
    except Exception:
        log.exception('py_cachify: on_lost for pool %r raised', key)
