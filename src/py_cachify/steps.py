"""Steps that I/O-free rules yield, and the one sync and one async driver that run them.

A rule (acquiring a slot, fetching a cached value) is a generator: it yields a `Call` to
run, a `Wait`, `WATCH` ("a message for me wakes me from now on", without subscribing) or
`LISTEN` (the same, and subscribe the channel), is sent each call's reply, and returns its
result. The drivers below only do the I/O, so the rules are written once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Final, TypeVar

from .ops import Call

if TYPE_CHECKING:
    from .backends import Backend

__all__ = ['LISTEN', 'WATCH', 'Step', 'Wait', 'arun', 'run']

R = TypeVar('R')


@dataclass(frozen=True)
class Wait:
    """Wait up to `seconds` for a wake-up, then go on; at most `unheard` seconds (if given)
    while no subscription hears the channel (`Wakeups.heard`), when a message may be lost."""

    seconds: float
    unheard: float | None = None

    def timeout(self, heard: Callable[[], bool]) -> float:
        """How long to wait, `heard` telling whether the channel's messages reach us now."""
        if self.unheard is None or self.unheard >= self.seconds or heard():
            return self.seconds
        return self.unheard


LISTEN: Final = object()  # the rule asks to be woken by messages on its channel from now on
WATCH: Final = object()  # the same, without subscribing the channel (yet): registration only
Step = Call | Wait | object

Register = Callable[[Callable[[], object]], None]  # hands the driver's wake callback to the wake-ups


def run(
    flow: Generator[Step, object, R], backend: Backend, channel: str, register: Register, unregister: Callable[[], None]
) -> R:
    """Run `flow` from sync code; its wake-up is registered only if it asks to listen."""
    woken: threading.Event | None = None  # most flows never wait: nothing is made for them
    try:
        step = next(flow)
        while True:
            if step is LISTEN or step is WATCH:
                if woken is None:
                    woken = threading.Event()
                    register(woken.set)
                if step is LISTEN:
                    backend.listen(channel)
                reply = None
            elif isinstance(step, Wait):
                assert woken is not None
                woken.wait(step.timeout(partial(backend.wakeups.heard, channel)))
                woken.clear()  # before the next try: a message after it sets it again
                reply = None
            else:
                assert isinstance(step, Call)
                reply = backend.run(step)
            step = flow.send(reply)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        if woken is not None:
            unregister()


async def arun(
    flow: Generator[Step, object, R], backend: Backend, channel: str, register: Register, unregister: Callable[[], None]
) -> R:
    """`run` for asyncio."""
    woken: asyncio.Event | None = None
    try:
        step = next(flow)
        while True:
            if step is LISTEN or step is WATCH:
                if woken is None:
                    woken = asyncio.Event()
                    register(partial(asyncio.get_running_loop().call_soon_threadsafe, woken.set))
                if step is LISTEN:
                    backend.listen(channel)
                reply = None
            elif isinstance(step, Wait):
                assert woken is not None
                # Not wait_for(): before 3.12 it swallows a cancellation that lands as the
                # event is set. The timer just sets the event; the next try sorts it out.
                seconds = step.timeout(partial(backend.wakeups.heard, channel))
                timer = asyncio.get_running_loop().call_later(seconds, woken.set)
                try:
                    await woken.wait()
                finally:
                    timer.cancel()
                woken.clear()
                reply = None
            else:
                assert isinstance(step, Call)
                reply = await backend.arun(step)
            step = flow.send(reply)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        if woken is not None:
            unregister()
