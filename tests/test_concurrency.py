"""Never more than max_size holders: threads, tasks and processes on one pool, counted apart."""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import threading
import time
from typing import Any

import pytest
import redis
import redis.asyncio

from py_cachify import Cachify, CachifyPoolFullError, init_cachify

from .waiting import TIMEOUT, run_to_end

MAX = 3


class Counter:
    """Counts holders independently of the pool: the pool must keep its peak <= MAX."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.peak = self.entered = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.entered += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1

    def enough(self) -> bool:
        """Seen enough to judge: many entries, and the pool full at least once."""
        return self.entered > 50 and self.peak >= MAX


@pytest.mark.parametrize('backend', ['memory', 'redis'])
def test_threads_sharing_one_pool_object_never_exceed_max_size(cachify: Cachify) -> None:
    p = cachify.pool('threads', max_size=MAX, slot_exp=30)
    counter = Counter()
    # Until enough entries and a full pool were seen, however slow the machine: not for a fixed time.
    deadline = time.monotonic() + TIMEOUT

    def worker() -> None:
        while not counter.enough() and time.monotonic() < deadline:
            try:
                with p:
                    counter.enter()
                    time.sleep(0.001)
                    counter.leave()
            except CachifyPoolFullError:
                time.sleep(0.0005)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    try:
        for thread in threads:
            thread.start()
    finally:
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join()
    assert counter.peak == MAX
    assert counter.entered > 50
    assert p.size() == 0


@pytest.mark.parametrize('backend', ['memory', 'redis'])
async def test_tasks_never_exceed_max_size(cachify: Cachify) -> None:
    p = cachify.pool('tasks', max_size=MAX, slot_exp=30)
    counter = Counter()
    deadline = time.monotonic() + TIMEOUT

    async def worker() -> None:
        while not counter.enough() and time.monotonic() < deadline:
            try:
                async with p:
                    counter.enter()
                    await asyncio.sleep(0.001)
                    counter.leave()
            except CachifyPoolFullError:
                await asyncio.sleep(0.0005)

    tasks = [asyncio.create_task(worker()) for _ in range(40)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert counter.peak == MAX
    assert counter.entered > 50
    assert await p.asize() == 0


def _process_worker(
    url: str, prefix: str, now: Any, peak: Any, entered: Any, lock: Any, stop_at: float, wait: bool, start: Any
) -> None:
    cachify = init_cachify(redis.Redis.from_url(url), prefix=prefix, is_global=False)
    # Waiters must be woken by other processes' releases, not by the safety-net poll.
    sys.modules['py_cachify.pool'].FALLBACK_POLL = 60.0  # type: ignore[attr-defined]

    @cachify.pooled(key='procs', max_size=MAX, slot_exp=30, nowait=not wait, timeout=30 if wait else None)
    def hold() -> None:
        with lock:
            now.value += 1
            entered.value += 1
            peak.value = max(peak.value, now.value)
        time.sleep(0.02 if wait else 0.002)
        with lock:
            now.value -= 1

    if wait:
        # Start together (spawning is slow and staggered on a loaded machine), then all 40 calls contend.
        start.wait(TIMEOUT)
        for _ in range(10):
            hold()
        return
    # Until the pool was seen full and used often enough, however slow the start-up was.
    while (entered.value < 60 or peak.value < MAX) and time.time() < stop_at:
        hold()


@pytest.mark.slow
@pytest.mark.parametrize('wait', [False, True], ids=['nowait', 'waiting'])
def test_processes_never_exceed_max_size(redis_url: str, redis_client: redis.Redis, wait: bool) -> None:
    ctx = multiprocessing.get_context('spawn')
    lock = ctx.Lock()
    now, peak, entered = ctx.Value('i', 0, lock=False), ctx.Value('i', 0, lock=False), ctx.Value('i', 0, lock=False)
    # Waiting workers start their calls together; the others stop once they saw enough.
    start, stop_at = ctx.Barrier(4), time.time() + TIMEOUT
    procs = [
        ctx.Process(target=_process_worker, args=(redis_url, 'procs-', now, peak, entered, lock, stop_at, wait, start))
        for _ in range(4)
    ]
    run_to_end(procs, 60)
    assert peak.value == MAX
    # Waiting workers each make exactly 10 calls: every one of them got its turn.
    assert entered.value == 40 if wait else entered.value >= 60
    assert redis_client.exists('{procs-procs-pool}:slots') == 0


@pytest.mark.parametrize('backend', ['memory', 'redis'])
async def test_sync_and_async_code_in_one_process_share_the_pool(cachify: Cachify) -> None:
    p = cachify.pool('mixed', max_size=1)
    with p:
        with pytest.raises(CachifyPoolFullError):
            async with p:
                pass
        assert await p.asize() == 1
    async with p:
        assert p.size() == 1
