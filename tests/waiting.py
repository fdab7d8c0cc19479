"""Wait for a condition instead of sleeping a fixed time: a loaded machine is slow, never wrong."""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.process import BaseProcess
from typing import Any

__all__ = ['TIMEOUT', 'await_until', 'from_forked_child', 'run_to_end', 'wait_until']

TIMEOUT = 30.0  # generous: on two loaded cores a wake-up can take seconds


def wait_until(predicate: Callable[[], object], timeout: float = TIMEOUT, what: str = '') -> None:
    """Return as soon as `predicate()` is true; raise AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f'not true after {timeout} s: {what or predicate}')
        time.sleep(0.01)


async def await_until(
    predicate: Callable[[], object | Awaitable[object]], timeout: float = TIMEOUT, what: str = ''
) -> None:
    """`wait_until` for asyncio: `predicate` may be a coroutine function; the loop keeps running."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f'not true after {timeout} s: {what or predicate}')
        await asyncio.sleep(0.01)


def run_to_end(processes: Sequence[BaseProcess], timeout: float = 60.0) -> None:
    """Start `processes`, wait for each to exit 0; kill whatever still runs, even on failure."""
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout)
            assert process.exitcode == 0, f'{process.name} ended with {process.exitcode}'
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()


def from_forked_child(target: Callable[..., None], *args: Any, timeout: float = TIMEOUT) -> Any:
    """Fork a child that runs `target(conn, *args)`; return what it sends on `conn` first.

    The child is joined, or killed if it will not end, even when it never answers.
    """
    ctx = multiprocessing.get_context('fork')
    parent_end, child_end = ctx.Pipe()
    process = ctx.Process(target=target, args=(child_end, *args))
    process.start()
    try:
        assert parent_end.poll(timeout), 'the child did not answer'
        return parent_end.recv()
    finally:
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
