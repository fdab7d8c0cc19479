"""Backends run `ops.Call`s: Redis through the Lua scripts, or the embedded in-process store."""

from __future__ import annotations

from typing import Protocol

from ..ops import Call

__all__ = ['Backend']


class Backend(Protocol):
    """Runs one atomic pool operation and returns the script's raw reply."""

    def run(self, call: Call) -> object:
        """Run `call` from synchronous code."""
        ...

    async def arun(self, call: Call) -> object:
        """Run `call` from asyncio code."""
        ...
