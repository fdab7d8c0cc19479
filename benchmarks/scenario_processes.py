"""Scenario 5: spawned processes on one pool, with an independent holder counter."""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from typing import Any

import redis
import redis.connection
from harness import GRACE_S, HOLD_S, RETRY_S, Config, Result, reap, sync_pair

from py_cachify import CachifyPoolFullError, init_cachify, pool

PROCESSES, PROCESS_POOL = 4, 2  # fewer slots than processes, so the cap is actually tested


# -- 5: several processes on one pool --------------------------------------------------


def process_worker(
    url: str,
    key: str,
    seconds: float,
    barrier: Any,
    holders: Any,
    highest: Any,
    totals: Any,
    index: int,
) -> None:
    """One process: enter, hold, leave, for `seconds`; counts holders outside the pool."""
    init_cachify(sync_client=redis.Redis.from_url(url))
    p = pool(key=key, max_size=PROCESS_POOL)
    # Connect and load the scripts before the common start. The others warm up at the same
    # time and may hold both slots: a "full" answer has connected and loaded them too.
    with contextlib.suppress(CachifyPoolFullError):
        sync_pair(p)()
    barrier.wait()
    deadline = time.perf_counter() + seconds
    enters = full = 0
    while time.perf_counter() < deadline:
        try:
            with p:
                # Counted strictly inside the pool's with: this counter never exceeds the real
                # number of holders, so a value above max_size is a real violation.
                with holders.get_lock():
                    holders.value += 1
                    highest.value = max(highest.value, holders.value)
                enters += 1
                try:
                    time.sleep(HOLD_S)
                finally:
                    with holders.get_lock():
                        holders.value -= 1
        except CachifyPoolFullError:
            full += 1
            time.sleep(RETRY_S)
    totals[2 * index], totals[2 * index + 1] = enters, full


def processes(cfg: Config) -> Result:
    """5. Several processes on one pool: throughput, and the most holders ever seen at once."""
    ctx = multiprocessing.get_context('spawn')  # a clean interpreter per worker, no inherited sockets
    barrier = ctx.Barrier(PROCESSES + 1)
    holders, highest = ctx.Value('i', 0), ctx.Value('i', 0)
    totals = ctx.Array('q', 2 * PROCESSES)
    workers = [
        ctx.Process(
            target=process_worker,
            args=(cfg.url, cfg.key('processes'), cfg.load_seconds, barrier, holders, highest, totals, i),
        )
        for i in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    barrier.wait(timeout=60)
    reap(workers, cfg.load_seconds + GRACE_S)
    failed = sum(1 for worker in workers if worker.exitcode != 0)
    return Result(
        metrics={
            'enters_per_s': sum(totals[0::2]) / cfg.load_seconds,
            'max_holders': highest.value,
            'over_limit': max(0, highest.value - PROCESS_POOL),
            'full_answers': sum(totals[1::2]),
            'failed_workers': failed,
        },
        info={'processes': PROCESSES, 'pool': PROCESS_POOL, 'hold_s': HOLD_S, 'retry_s': RETRY_S},
    )
