"""Failover with the real things: Sentinel and Cluster masters SIGKILLed (or failed over) under load.

Workers (threads on a sync client, tasks on an asyncio-only client, and for the cluster a
second process) loop entering and leaving one waiting pool while its master dies. They
count holders themselves, independently of the pool: never more than `max_size`. Every
error a worker sees must be a `CachifyBackendError` (never a raw redis-py error, never
"full": the pool waits without a timeout). After the failover the same pool objects work
again, and waiters are woken by pub/sub again. The figures (recovery time, wake-up
latency) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel

from py_cachify import Cachify, CachifyBackendError, init_cachify

from .redis_server import RedisCluster, RedisSentinel
from .test_wakeups import PUBSUB_SPEED, channel_of, pubsub_p50, until, until_pubsub_speed

pytestmark = pytest.mark.slow

MAX_SIZE = 2
HOLD = 0.005  # seconds each worker holds its slot
# Timeouts on the clients, so a call to a dead master fails instead of hanging.
CLIENT_OPTIONS: dict[str, Any] = {'socket_timeout': 1.0, 'socket_connect_timeout': 1.0}


@dataclass
class Load:
    """Workers looping `with pool:`; what they saw, counted outside the pool."""

    holding: int = 0
    peak: int = 0
    entries: list[tuple[float, float]] = field(default_factory=list)  # (try started, entered)
    backend_errors: int = 0
    wrong: list[BaseException] = field(default_factory=list)  # anything but CachifyBackendError
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def entered(self, started: float) -> None:
        with self.lock:
            self.holding += 1
            self.peak = max(self.peak, self.holding)
            self.entries.append((started, time.monotonic()))

    def leaving(self) -> None:
        with self.lock:
            self.holding -= 1

    def failed(self, exc: BaseException) -> None:
        with self.lock:
            if isinstance(exc, CachifyBackendError):
                self.backend_errors += 1
            else:
                self.wrong.append(exc)

    def first_entry_after(self, moment: float) -> float:
        """Seconds from `moment` to the first entry whose try began after it."""
        with self.lock:
            return min(entered for started, entered in self.entries if started > moment) - moment

    def entries_after(self, moment: float) -> int:
        with self.lock:
            return sum(1 for started, _ in self.entries if started > moment)

    def thread_worker(self, cachify: Cachify, key: str) -> None:
        pool = cachify.pool(key, max_size=MAX_SIZE, slot_exp=5, nowait=False)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                with pool:
                    self.entered(started)
                    try:
                        time.sleep(HOLD)
                    finally:
                        self.leaving()
            except Exception as exc:
                self.failed(exc)
                time.sleep(0.01)

    async def task_worker(self, cachify: Cachify, key: str) -> None:
        pool = cachify.pool(key, max_size=MAX_SIZE, slot_exp=5, nowait=False)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                async with pool:
                    self.entered(started)
                    try:
                        await asyncio.sleep(HOLD)
                    finally:
                        self.leaving()
            except Exception as exc:
                self.failed(exc)
                await asyncio.sleep(0.01)


class Running:
    """A load's threads and tasks, stopped and joined whatever happens."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.threads: list[threading.Thread] = []
        self.tasks: list[asyncio.Task[None]] = []

    def thread(self, cachify: Cachify, key: str) -> None:
        thread = threading.Thread(target=self.load.thread_worker, args=(cachify, key), daemon=True)
        thread.start()
        self.threads.append(thread)

    def task(self, cachify: Cachify, key: str) -> None:
        self.tasks.append(asyncio.ensure_future(self.load.task_worker(cachify, key)))

    async def stop(self) -> None:
        """Stop the workers; waiting ones are woken by the others' last releases or their poll."""
        self.load.stop.set()
        if self.tasks:
            done, pending = await asyncio.wait(self.tasks, timeout=30)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
            for task in done:
                task.result()
        for thread in self.threads:
            await asyncio.to_thread(thread.join, 30)
        assert not any(t.is_alive() for t in self.threads), 'a worker thread did not stop'


async def run_through(load: Load, kill: Callable[[], object], settle: Callable[[], object]) -> tuple[float, float]:
    """Let the load run, `kill`, wait for `settle` (the failover) off the loop; (kill time, settled time)."""
    await until(lambda: len(load.entries) >= 20, what='the load got going')
    await asyncio.to_thread(kill)
    killed = time.monotonic()  # once the process is gone: nothing after this reached it
    await asyncio.to_thread(settle)
    settled = time.monotonic()
    # The same pool objects work again, for every kind of worker.
    await until(lambda: load.entries_after(settled) >= 20, timeout=60, what='the pool worked again after failover')
    return killed, settled


def check(load: Load) -> None:
    assert not load.wrong, f'errors other than CachifyBackendError: {load.wrong[:5]!r}'
    assert load.peak <= MAX_SIZE, f'{load.peak} holders at once, max_size={MAX_SIZE}'
    assert load.holding == 0


# -- Sentinel ---------------------------------------------------------------------------------


@pytest.fixture
async def sentinel() -> AsyncIterator[RedisSentinel]:
    with RedisSentinel(replicas=1, down_after_ms=1000) as deployment:
        yield deployment


async def test_a_sentinel_failover_under_load(sentinel: RedisSentinel) -> None:
    sync_sentinel = redis.sentinel.Sentinel(sentinel.sentinel_addresses, **CLIENT_OPTIONS)
    sync_master = sync_sentinel.master_for(sentinel.service, **CLIENT_OPTIONS)
    async_sentinel = redis.asyncio.sentinel.Sentinel(sentinel.sentinel_addresses, **CLIENT_OPTIONS)
    async_master = async_sentinel.master_for(sentinel.service, **CLIENT_OPTIONS)
    # redis-py reorders `Sentinel.sentinels` as it finds the master, and concurrent lookups can
    # drop a client from that list (seen with 8.1): close the clients it started with.
    sentinel_clients = [*sync_sentinel.sentinels, *async_sentinel.sentinels]
    # A listener thread (sync client) and a listener task (asyncio client only), on one pool.
    threaded = init_cachify(sync_master, async_master, prefix='sentinel-', is_global=False)
    tasked = init_cachify(None, async_master, prefix='sentinel-', is_global=False)
    load = Load()
    running = Running(load)
    try:
        for _ in range(3):
            running.thread(threaded, 'load')
            running.task(tasked, 'load')
        killed, settled = await run_through(load, sentinel.kill_master, lambda: None)
        failed_over = await asyncio.to_thread(sentinel.wait_for_failover, sentinel.master)
        await running.stop()
        check(load)
        assert failed_over is sentinel.replicas[0]
        recovery = load.first_entry_after(killed)
        wakeups = {}
        for kind, cachify in (('thread', threaded), ('task', tasked)):
            took, _ = await until_pubsub_speed(cachify, 'after', kind, deadline=30)
            wakeups[kind] = await pubsub_p50(cachify, 'after', kind)
            assert wakeups[kind] < PUBSUB_SPEED
        print(
            f'\nSentinel failover under load: first acquire {recovery:.3f} s after the SIGKILL '
            f'({load.backend_errors} CachifyBackendErrors, peak {load.peak}/{MAX_SIZE}); '
            f'wake-up p50 after it: thread {wakeups["thread"] * 1000:.1f} ms, task {wakeups["task"] * 1000:.1f} ms'
        )
    finally:
        await running.stop()
        await threaded.aclose()
        await tasked.aclose()
        sync_master.close()
        await async_master.aclose()
        for client in sentinel_clients:
            await client.aclose() if isinstance(client, redis.asyncio.Redis) else client.close()
