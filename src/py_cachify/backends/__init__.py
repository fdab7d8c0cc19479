"""Backends run `ops.Call`s: Redis through the Lua scripts, or the embedded in-process store."""

from __future__ import annotations

from typing import Protocol

from ..giveback import GiveBacks
from ..notify import Wakeups
from ..ops import Call

__all__ = ['Backend']


class Backend(Protocol):
    """Runs one atomic pool operation and returns the script's raw reply; routes wake-ups."""

    wakeups: Wakeups
    give_backs: GiveBacks

    def run(self, call: Call) -> object:
        """Run `call` from synchronous code."""
        ...

    async def arun(self, call: Call) -> object:
        """Run `call` from asyncio code."""
        ...

    def listen(self, channel: str) -> None:
        """Ask for release messages on `channel` to reach `wakeups` from now on.

        Never blocks and never raises: a waiter does not wait for its subscription. Whenever
        the channel becomes subscribed (again), every local waiter on it is woken to retry,
        so a release that happened before the subscription is not missed.
        """
        ...

    def close(self) -> None:
        """Stop listeners and background retries; close pub/sub connections."""
        ...

    async def aclose(self) -> None:
        """`close`, waiting for this event loop's listener and retry tasks to end."""
        ...
