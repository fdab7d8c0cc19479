"""Backends run `ops.Call`s: Redis through the Lua scripts, or the embedded in-process store."""

from __future__ import annotations

from typing import Protocol

from ..notify import Wakeups
from ..ops import Call

__all__ = ['Backend']


class Backend(Protocol):
    """Runs one atomic pool operation and returns the script's raw reply; routes wake-ups."""

    wakeups: Wakeups

    def run(self, call: Call) -> object:
        """Run `call` from synchronous code."""
        ...

    async def arun(self, call: Call) -> object:
        """Run `call` from asyncio code."""
        ...

    def listen(self, channel: str) -> None:
        """Make sure release messages on `channel` reach `wakeups` (sync callers)."""
        ...

    async def alisten(self, channel: str) -> None:
        """Make sure release messages on `channel` reach `wakeups` (asyncio callers)."""
        ...
