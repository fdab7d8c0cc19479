"""Leases: a held slot that any thread, task or context can give back, renewal that never
misreports, clean-ups that survive repeated cancellation, and slots that survive fork."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import logging
import multiprocessing
import multiprocessing.connection
import random
import threading
import tracemalloc
from collections.abc import Iterator

import pytest
import redis

from py_cachify import Cachify, CachifyPoolFullError, init_cachify, pool
from py_cachify.ops import pool_keys

from .conftest import Api
from .waiting import await_until, from_forked_child


async def test_a_lease_is_released_from_another_thread_or_task(cachify: Cachify, api: Api) -> None:
    p = cachify.pool('lease', max_size=1)
    lease = p.acquire() if api.mode == 'sync' else await p.aacquire()
    assert lease.held
    assert lease.key == 'lease'
    assert await api.size(p) == 1
    with pytest.raises(CachifyPoolFullError):
        p.acquire()
    if api.mode == 'sync':
        released: list[bool] = []
        thread = threading.Thread(target=lambda: released.append(lease.release()))
        thread.start()
        thread.join()
        assert released == [True]
    else:
        assert await asyncio.create_task(lease.arelease()) is True
    assert not lease.held
    assert await api.size(p) == 0


async def test_with_lease_makes_it_the_one_pool_extend_acts_on(cachify: Cachify, api: Api) -> None:
    p = cachify.pool('lease-extend', max_size=2, slot_exp=5)
    with pytest.raises(RuntimeError, match='not held'):
        p.extend()
    if api.mode == 'sync':
        with p.acquire() as lease:
            assert p.extend(50) is True
            assert 5 < next(iter(p.holders().values())) <= 50  # type: ignore[operator]
    else:
        async with await p.aacquire() as lease:
            assert await p.aextend(50) is True
            assert 5 < next(iter((await p.aholders()).values())) <= 50  # type: ignore[operator]
    assert await api.size(p) == 0  # released on exit
    with pytest.raises(RuntimeError, match='released'):
        lease.extend()


def test_an_exit_in_another_context_releases_the_slot(cachify: Cachify) -> None:
    # A sync dependency of a web framework enters in one copied context and exits in another.
    p = cachify.pool('foreign-context', max_size=1)
    contextvars.copy_context().run(p.__enter__)
    assert p.size() == 1
    contextvars.copy_context().run(p.__exit__, None, None, None)
    assert p.size() == 0
    with pytest.raises(RuntimeError, match='not held'):
        p.__exit__(None, None, None)


def test_extend_inside_a_pool_s_own_decorator_finds_its_slot(cachify: Cachify) -> None:
    p = cachify.pool('decorated-extend', max_size=1, slot_exp=5)

    @p.pooled()
    def work() -> bool:
        return p.extend(60)

    assert work() is True
    assert p.size() == 0


@pytest.mark.parametrize('backend', ['memory'])
def test_one_shot_pools_keep_no_memory_per_pool_object(cachify: Cachify) -> None:
    def one_shot(first: int, count: int) -> None:
        for i in range(first, first + count):
            with cachify.pool(f'user-{i}', max_size=1):
                pass

    tracemalloc.start()
    try:
        one_shot(0, 5_000)  # fill pool_keys' bounded cache (4,096 entries), warm code paths
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        one_shot(5_000, 20_000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # One ContextVar per pool object kept ~10 MB for 20,000 pools; a lease stack keeps none.
    assert grown < 300_000, f'{grown:,} bytes kept after 20,000 one-shot pools'


def test_a_release_goes_to_the_store_the_slot_was_taken_on(redis_url: str, no_global: None) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        on_redis = init_cachify(client, prefix='switched-')
        p = pool('switched', max_size=1)
        p.__enter__()
        init_cachify()  # the global is now the embedded store
        p.__exit__(None, None, None)
        assert on_redis.pool('switched', max_size=1).size() == 0
    finally:
        client.close()


@pytest.mark.parametrize('backend', ['redis'])
async def test_a_clean_exit_never_reports_a_lost_slot(cachify: Cachify, api: Api) -> None:
    # The renewer fires every 20 ms and the holder leaves right around then: a renewal in
    # flight at exit must not turn into a false "lost" once the release has landed. A slot
    # that really expired (a renewal delayed past slot_exp on a loaded machine) is released
    # with False: only a loss reported for a slot that was still held at release is false.
    rng = random.Random(7)
    runs: list[tuple[bool, list[str]]] = []
    for _ in range(300):
        lost: list[str] = []
        p = cachify.pool('clean-exit', max_size=1, slot_exp=0.06, auto_renew=True, on_lost=lost.append)
        lease = p.acquire() if api.mode == 'sync' else await p.aacquire()
        await asyncio.sleep(rng.uniform(0.019, 0.021))  # leave just as a renewal goes out
        released = lease.release() if api.mode == 'sync' else await lease.arelease()
        runs.append((released, lost))
    false_alarms = [lost for released, lost in runs if released and lost]
    assert false_alarms == []
    assert sum(released for released, _ in runs) > 150  # most runs did race a renewal
    assert await api.size(cachify.pool('clean-exit', max_size=1)) == 0


@pytest.mark.parametrize('backend', ['redis'])
async def test_a_fair_waiter_cancelled_twice_leaves_no_ghost_in_the_queue(
    cachify: Cachify, redis_client: redis.Redis
) -> None:
    holder = cachify.pool('ghost', max_size=1)
    waiter = cachify.pool('ghost', max_size=1, nowait=False, timeout=60, fair=True)
    queue = pool_keys(cachify.settings.prefix + 'ghost').queue
    async with holder:
        task = asyncio.create_task(waiter.aacquire())
        await await_until(lambda: redis_client.zcard(queue) == 1)
        # Stall the server so that the clean-up (release + leave) is still in flight when the
        # second and third cancellations arrive.
        redis_client.execute_command('CLIENT', 'PAUSE', 300, 'WRITE')  # type: ignore[no-untyped-call]
        task.cancel()
        for _ in range(2):
            await asyncio.sleep(0.02)
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert redis_client.zcard(queue) == 0  # clean-up finished before the cancellation surfaced
    assert await holder.asize() == 0


@pytest.mark.parametrize('backend', ['redis'])
async def test_a_cancellation_storm_leaves_nothing_behind_and_swallows_no_cancellation(
    cachify: Cachify, redis_client: redis.Redis
) -> None:
    keys = pool_keys(cachify.settings.prefix + 'storm')
    rng = random.Random(11)

    async def worker() -> None:
        async with cachify.pool('storm', max_size=2, nowait=False, timeout=60, fair=True):
            await asyncio.sleep(rng.uniform(0, 0.004))

    tasks = [asyncio.create_task(worker()) for _ in range(600)]
    requested: set[asyncio.Task[None]] = set()

    def cancel(task: asyncio.Task[None], twice: bool) -> None:
        if task.cancel():
            requested.add(task)
            if twice:
                asyncio.get_running_loop().call_soon(task.cancel)

    for task in tasks:  # each at a random moment: queued, waiting, entering, in the body, exiting
        asyncio.get_running_loop().call_later(rng.uniform(0, 1.5), cancel, task, rng.random() < 0.3)
    try:
        await asyncio.wait(tasks, timeout=120)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    swallowed = [t for t in requested if not t.cancelled()]
    assert swallowed == [], f'{len(swallowed)} of {len(requested)} cancellations swallowed'
    assert redis_client.zcard(keys.queue) == 0
    assert redis_client.zcard(keys.slots) == 0


def _exit_in_child(conn: multiprocessing.connection.Connection) -> None:
    # The child inherits the parent's held lease through its `with`: exiting must not free it.
    cachify = _forked_cachify
    assert cachify is not None
    with logging_captured() as records:
        _forked_pool.__exit__(None, None, None)
    conn.send((cachify.pool('forked', max_size=1).size(), [r.getMessage() for r in records]))


_forked_cachify: Cachify | None = None
_forked_pool: pool


@pytest.mark.slow
def test_a_lease_inherited_across_fork_is_not_released_by_the_child(redis_url: str) -> None:
    global _forked_cachify, _forked_pool
    client = redis.Redis.from_url(redis_url)
    _forked_cachify = init_cachify(client, prefix='fork-lease-', is_global=False)
    _forked_pool = _forked_cachify.pool('forked', max_size=1)
    with _forked_pool:
        size_in_child, messages = from_forked_child(_exit_in_child)
        assert size_in_child == 1
        assert any('not released from its child' in m for m in messages)
        assert _forked_pool.size() == 1
    assert _forked_pool.size() == 0
    client.close()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def logging_captured() -> Iterator[list[logging.LogRecord]]:
    handler = _Records()
    logging.getLogger('py_cachify').addHandler(handler)
    try:
        yield handler.records
    finally:
        logging.getLogger('py_cachify').removeHandler(handler)


def test_fair_needs_nowait_false_and_shed_at_is_a_fraction_that_admits_someone() -> None:
    with pytest.raises(ValueError, match='fair=True'):
        pool('k', 1, fair=True)
    with pytest.raises(ValueError, match='1.5'):
        pool('k', 10, shed_at=1.5)
    with pytest.raises(TypeError, match="'most'"):
        pool('k', 10, shed_at='most')  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='admits nobody'):
        pool('k', 2, shed_at=0.3)


async def test_shed_at_admits_below_its_share_of_max_size_atomically(cachify: Cachify, api: Api) -> None:
    shedding = cachify.pool('shed', max_size=10, shed_at=0.8)
    plain = cachify.pool('shed', max_size=10)
    held = [shedding.acquire() if api.mode == 'sync' else await shedding.aacquire() for _ in range(8)]
    with pytest.raises(CachifyPoolFullError):
        shedding.acquire() if api.mode == 'sync' else await shedding.aacquire()
    async with api.hold(plain), api.hold(plain):  # the full max_size is still there for others
        assert await api.size(plain) == 10
    for lease in held:
        lease.release()
    assert await api.size(plain) == 0
