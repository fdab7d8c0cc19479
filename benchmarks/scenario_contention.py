"""Scenario 4: 64 asyncio tasks on one pool of 8, with counts kept by the client."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from harness import GRACE_S, HOLD_S, RETRY_S, Config, Result, async_pair, async_redis, make_pool, percentile

from py_cachify import CachifyPoolFullError, pool

TASKS, TASK_POOL = 64, 8


# -- 4: contention inside one event loop -----------------------------------------------


@dataclass
class Contention:
    """What the 64 tasks saw, kept on the client side, independent of the pool's own answers.

    `upper` bounds how many slots Redis can hold: it counts acquires sent (the pool may have
    granted them already) minus releases acknowledged and acquires answered "full". A "full"
    answer is certainly wrong if `upper`, which includes the asking task itself, stayed at or
    below max_size for the whole flight of the request, i.e. never rose past it; `crossings`
    counts those rises, so the check is O(1) per request.

    Figures are recorded from `start()` until `close()` at the deadline; what the tasks do
    while they are being cancelled after it is not measured.
    """

    max_size: int
    measuring: bool = False
    started_ns: int = 0
    closed_ns: int = 0
    upper: int = 0
    crossings: int = 0
    inside: int = 0  # tasks in the body of their `async with`
    max_inside: int = 0
    releasing: int = 0  # tasks past their body, still in __aexit__ (the slot may or may not be free yet)
    occupancy_ns: int = 0  # integral of `inside` over time: average occupancy = this / duration
    releasing_ns: int = 0  # the same for `releasing`
    changed_ns: int = 0
    enters: int = 0
    full: int = 0
    full_while_free: int = 0
    errors: int = 0
    waits_ns: list[int] = field(default_factory=list)
    waiting_since: dict[object, int] = field(default_factory=dict)  # task -> when its current wait began
    # Harness checks, not figures: tasks still retrying after their cancel, and tasks not done
    # GRACE_S after it.
    outlived_cancel: int = 0
    stuck: int = 0

    def start(self) -> None:
        self.started_ns = self.changed_ns = time.perf_counter_ns()
        self.measuring = True

    def close(self) -> None:
        # Tasks still waiting count with the wait so far: leaving them out would hide exactly
        # the starved ones.
        self._account()
        self.closed_ns = time.perf_counter_ns()
        self.waits_ns.extend(self.closed_ns - since for since in self.waiting_since.values())
        self.measuring = False

    @property
    def seconds(self) -> float:
        return (self.closed_ns - self.started_ns) / 1e9

    def sent(self) -> tuple[int, bool]:
        self.upper += 1
        if self.upper == self.max_size + 1:
            self.crossings += 1
        return self.crossings, self.upper > self.max_size

    def answered_full(self, token: tuple[int, bool]) -> None:
        crossings, past_max = token
        if self.measuring:
            self.full += 1
            self.full_while_free += not past_max and crossings == self.crossings
        self.upper -= 1

    def entered(self, task: object) -> None:
        waited = time.perf_counter_ns() - self.waiting_since.pop(task)
        self._account()
        self.inside += 1
        if self.measuring:
            self.enters += 1
            self.waits_ns.append(waited)
            self.max_inside = max(self.max_inside, self.inside)

    def left(self) -> None:
        self._account()
        self.inside -= 1
        self.releasing += 1

    def released(self, acknowledged: bool) -> None:
        self._account()
        self.releasing -= 1
        if acknowledged:  # else the slot may still be held: `upper` keeps counting it
            self.upper -= 1

    def _account(self) -> None:
        now = time.perf_counter_ns()
        if self.measuring:
            self.occupancy_ns += self.inside * (now - self.changed_ns)
            self.releasing_ns += self.releasing * (now - self.changed_ns)
        self.changed_ns = now


async def contention_task(p: pool, state: Contention) -> None:
    me = object()
    while state.measuring:
        state.waiting_since[me] = time.perf_counter_ns()
        while True:
            token = state.sent()
            body_done = False
            try:
                async with p:
                    state.entered(me)
                    try:
                        await asyncio.sleep(HOLD_S)
                    finally:
                        state.left()
                        body_done = True
            except CachifyPoolFullError:
                state.answered_full(token)
                if not state.measuring:
                    # Also ends a task whose cancel was lost inside the library: with 3.1.0 the
                    # cancelled tasks' slots can stay taken, and it would retry "full" forever.
                    state.outlived_cancel += 1
                    return
                await asyncio.sleep(RETRY_S)
                continue
            except Exception:  # e.g. 3.1.0's meta-lock timing out in release: the slot may stay held
                state.errors += state.measuring
                if body_done:
                    state.released(acknowledged=False)
                break
            state.released(acknowledged=True)
            break


def contention(cfg: Config) -> Result:
    """4. 64 asyncio tasks retrying on one pool of 8 for a fixed time."""
    state = Contention(TASK_POOL)

    async def run() -> None:
        async with async_redis(cfg):
            p = make_pool(cfg, 'contention', TASK_POOL)
            await async_pair(p)()  # connects and loads the scripts before the clock starts
            state.start()
            tasks = [asyncio.ensure_future(contention_task(p, state)) for _ in range(TASKS)]
            await asyncio.sleep(cfg.load_seconds)
            state.close()
            for task in tasks:
                task.cancel()
            _, stuck = await asyncio.wait(tasks, timeout=GRACE_S)
            state.stuck = len(stuck)

    asyncio.run(run())
    result = Result(
        metrics={
            'enters_per_s': state.enters / state.seconds,
            'max_inside': state.max_inside,
            'avg_inside': state.occupancy_ns / (state.seconds * 1e9),
            'avg_releasing': state.releasing_ns / (state.seconds * 1e9),
            'full_while_free': state.full_while_free,
            'full_answers': state.full,
            'errors': state.errors,
        },
        info={
            'tasks': TASKS,
            'pool': TASK_POOL,
            'hold_s': HOLD_S,
            'retry_s': RETRY_S,
            'seconds': state.seconds,
            'outlived_cancel': state.outlived_cancel,
            'stuck_after_cancel': state.stuck,
        },
    )
    if state.waits_ns:
        result.metrics['wait_p50_ms'] = percentile(state.waits_ns, 0.50) / 1e6
        result.metrics['wait_p99_ms'] = percentile(state.waits_ns, 0.99) / 1e6
    return result
