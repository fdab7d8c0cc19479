"""Waiting for a slot, FIFO fairness, keeping a slot (extend, auto-renew), seeing holders."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio

from py_cachify import Cachify, CachifyBackendError, CachifyPoolFullError, init_cachify, pool
from py_cachify.backends.memory import MemoryBackend
from py_cachify.ops import Call, pool_keys
from py_cachify.settings import Settings

from .conftest import Api
from .waiting import await_until, wait_until


def waiters(cachify: Cachify, key: str) -> int:
    """How many local waiters wait on pool `key` now: registered, and holding a lease (their first try failed).

    A waiter registers before its first try; the lease shows that try is done. Without a sync
    client to read the leases with, registered ones are counted.
    """
    keys = pool_keys(cachify.settings.prefix + key)
    backend: Any = cachify.settings.backend
    registered = set(backend.wakeups._waiters.get(keys.channel, {}))
    if isinstance(backend, MemoryBackend):
        return len(registered & set(backend._zsets.get(keys.leases, {})))
    if getattr(backend, '_sync_client', None) is not None:
        return len(registered & {m.decode() for m in backend._sync_client.zrange(keys.leases, 0, -1)})
    return len(registered)


@pytest.fixture
def no_fallback_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the safety-net poll too slow to matter: a waiter must be woken by the event itself."""
    monkeypatch.setattr(sys.modules['py_cachify.pool'], 'FALLBACK_POLL', 60.0)


async def release_later(p: pool, api: Api, entered: asyncio.Event, leave: asyncio.Event) -> None:
    async with api.hold(p):
        entered.set()
        await leave.wait()


@pytest.mark.usefixtures('no_fallback_poll')
async def test_a_release_wakes_a_waiter(cachify: Cachify, api: Api) -> None:
    holder = cachify.pool('wake', max_size=1)
    waiter = cachify.pool('wake', max_size=1, nowait=False, timeout=10)
    entered, leave = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(release_later(holder, Api('async'), entered, leave))
    await entered.wait()
    asyncio.get_running_loop().call_later(0.1, leave.set)
    started = time.monotonic()
    if api.mode == 'sync':
        await asyncio.to_thread(lambda: waiter.__enter__() and waiter.__exit__(None, None, None))
    else:
        async with waiter:
            pass
    assert time.monotonic() - started < 10
    await task


@pytest.mark.usefixtures('no_fallback_poll')
async def test_a_waiter_wakes_when_the_nearest_slot_expires(cachify: Cachify, api: Api) -> None:
    cachify.pool('expiry', max_size=1, slot_exp=0.3).__enter__()  # a holder that never releases
    waiter = cachify.pool('expiry', max_size=1, nowait=False, timeout=10)
    async with api.hold(waiter):
        assert await api.size(waiter) == 1


async def test_waiting_gives_up_after_timeout(cachify: Cachify, api: Api) -> None:
    p = cachify.pool('timeout', max_size=1, nowait=False, timeout=0.3)
    async with api.hold(p):
        started = time.monotonic()
        with pytest.raises(CachifyPoolFullError):
            async with api.hold(p):
                pass
        assert time.monotonic() - started >= 0.3
    assert await api.size(p) == 0


async def test_fair_waiters_get_the_slot_in_arrival_order(cachify: Cachify) -> None:
    order: list[int] = []
    holder = cachify.pool('fifo', max_size=1)

    async def wait_in_line(i: int) -> None:
        async with cachify.pool('fifo', max_size=1, nowait=False, timeout=30, fair=True):
            order.append(i)
            await asyncio.sleep(0.005)

    tasks: list[asyncio.Task[None]] = []
    try:
        async with holder:
            for i in range(20):
                tasks.append(asyncio.create_task(wait_in_line(i)))
                # Each is queued (its first try failed, it waits) before the next arrives.
                await await_until(lambda n=i + 1: waiters(cachify, 'fifo') == n)
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert order == list(range(20))


@pytest.mark.parametrize('backend', ['memory', 'redis'])
def test_fair_waiting_threads_get_the_slot_in_arrival_order(cachify: Cachify) -> None:
    order: list[int] = []

    def wait_in_line(i: int) -> None:
        with cachify.pool('fifo-threads', max_size=1, nowait=False, timeout=30, fair=True):
            order.append(i)
            time.sleep(0.005)

    threads: list[threading.Thread] = []
    try:
        with cachify.pool('fifo-threads', max_size=1):
            for i in range(20):
                threads.append(threading.Thread(target=wait_in_line, args=(i,)))
                threads[-1].start()
                wait_until(lambda n=i + 1: waiters(cachify, 'fifo-threads') == n)
    finally:
        for thread in threads:
            thread.join()  # each gives up after its 30 s timeout at worst
    assert order == list(range(20))


async def test_a_cancelled_fair_waiter_leaves_the_queue(cachify: Cachify) -> None:
    holder = cachify.pool('leaving', max_size=1)
    queued = cachify.pool('leaving', max_size=1, nowait=False, fair=True)
    async with holder:
        task = asyncio.create_task(queued.__aenter__())
        try:
            await await_until(lambda: waiters(cachify, 'leaving') == 1)
        finally:
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Nobody is queued ahead any more: a newcomer may take the slot once it is free.
    nowait = cachify.pool('leaving', max_size=1)
    async with nowait:
        assert await nowait.asize() == 1


async def test_pooled_waits_then_calls_on_full(cachify: Cachify) -> None:
    entered, leave = asyncio.Event(), asyncio.Event()

    @cachify.pooled(key='dec-wait', max_size=1, on_full=lambda: 'gave up', nowait=False, timeout=0.2)
    async def work() -> str:
        entered.set()
        await leave.wait()
        return 'done'

    @cachify.pooled(key='dec-wait', max_size=1, nowait=False, timeout=30)
    async def patient() -> str:
        return 'done'

    first = asyncio.create_task(work())
    try:
        await entered.wait()
        assert await work() == 'gave up'
        leave.set()
        assert await patient() == 'done'
        assert await first == 'done'
    finally:
        first.cancel()


async def test_hundreds_of_async_waiters_share_one_subscriber_connection(
    redis_url: str, redis_client: redis.Redis
) -> None:
    channel = pool_keys('crowd-crowd').channel

    def subscribers() -> int:
        # Connections subscribed to this pool's channel: others' come and go meanwhile.
        [(_, count)] = redis_client.pubsub_numsub(channel)
        return int(count)

    # redis-py caps a client at 100 connections by default; 300 tasks *trying* at once need more.
    client = redis.asyncio.Redis.from_url(redis_url, max_connections=400)
    cachify = init_cachify(async_client=client, prefix='crowd-', is_global=False)
    p = cachify.pool('crowd', max_size=1, nowait=False, timeout=60)
    done = 0

    async def wait() -> None:
        nonlocal done
        async with p:
            done += 1

    tasks: list[asyncio.Task[None]] = []
    try:
        async with p:
            tasks = [asyncio.create_task(wait()) for _ in range(300)]
            # Every one of them waits (registered after a failed try) and the subscriber is up.
            await await_until(lambda: waiters(cachify, 'crowd') == 300, what='300 waiters')
            await await_until(lambda: subscribers() >= 1, what='a subscriber connection')
            # Waiting holds no connection of its own: one subscriber serves them all.
            assert subscribers() == 1
        await asyncio.gather(*tasks)
        assert done == 300
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await cachify.aclose()
        await client.aclose()


async def test_extend_keeps_a_held_slot_and_reports_a_lost_one(cachify: Cachify, api: Api) -> None:
    p = cachify.pool('extend', max_size=1, slot_exp=0.3)
    extend: Callable[..., Any] = p.extend if api.mode == 'sync' else p.aextend
    with pytest.raises(RuntimeError, match='not held'):
        await _maybe_await(extend())
    async with api.hold(p):
        assert await _maybe_await(extend(60.0)) is True
        await asyncio.sleep(0.4)  # past its slot_exp of 0.3 s
        assert await api.size(p) == 1
    async with api.hold(p):
        await await_until(lambda: _expired(api, p), what='the slot expired')
        assert await _maybe_await(extend()) is False  # lost: not taken back
        assert await api.size(p) == 0
    with pytest.raises(ValueError, match='seconds'):
        async with api.hold(p):
            await _maybe_await(extend(-1))


async def _maybe_await(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


async def _expired(api: Api, p: pool) -> bool:
    return await api.size(p) == 0


async def test_auto_renew_keeps_a_long_task_s_slot(cachify: Cachify, api: Api) -> None:
    # Renewed every 0.5 s: a renewal late by up to a second on a loaded machine still lands.
    p = cachify.pool('renewed', max_size=1, slot_exp=1.5, auto_renew=True)
    async with api.hold(p):
        for _ in range(3):
            await asyncio.sleep(0.6)  # 1.8 s in all: past slot_exp, so only renewal keeps it
            assert await api.size(p) == 1
    assert await api.size(p) == 0
    threads = threading.active_count()
    await asyncio.sleep(0.4)  # a renewer that outlived its slot would show up here
    assert threading.active_count() <= threads
    assert await api.size(p) == 0


async def test_auto_renew_reports_a_lost_slot_to_on_lost(cachify: Cachify, api: Api) -> None:
    lost: list[str] = []
    p = cachify.pool('stolen', max_size=1, slot_exp=0.3, auto_renew=True, on_lost=lost.append)
    async with api.hold(p):
        [slot] = await _maybe_await(p.holders() if api.mode == 'sync' else p.aholders())
        settings = cachify.settings
        cachify.settings.backend.run(_release(settings, 'stolen', slot))  # taken away behind its back
        await await_until(lambda: lost, what='on_lost called')
    assert lost == ['stolen']


@pytest.mark.parametrize('backend', ['memory', 'redis'])
def test_auto_renew_without_on_lost_logs_a_lost_slot(cachify: Cachify, caplog: pytest.LogCaptureFixture) -> None:
    p = cachify.pool('stolen-quietly', max_size=1, slot_exp=0.3, auto_renew=True)
    with caplog.at_level(logging.WARNING, logger='py_cachify'), p:
        [slot] = p.holders()
        cachify.settings.backend.run(_release(cachify.settings, 'stolen-quietly', slot))
        wait_until(lambda: 'lost the slot' in caplog.text, what='a warning logged')
    assert "lost the slot of pool 'stolen-quietly'" in caplog.text


async def _held(cachify: Cachify, key: str) -> bool:
    return await cachify.pool(key, max_size=1).asize() == 1


async def _empty(p: pool) -> bool:
    return await p.asize() == 0


def _release(settings: Settings, key: str, slot: str) -> Call:
    from py_cachify.ops import release_call

    return release_call(settings.prefix, key, slot, 1)


async def test_holders_and_free_slots(cachify: Cachify) -> None:
    timed, forever = cachify.pool('seen', max_size=3, slot_exp=10), cachify.pool('seen', max_size=3, slot_exp=None)
    assert timed.holders() == {}
    assert await timed.afree() == 3
    with timed, forever:
        seen = timed.holders()
        assert seen.keys() == (await timed.aholders()).keys()
        (slot_a, left_a), (slot_b, left_b) = seen.items()
        assert len(slot_a) == len(slot_b) == 12  # new_slot_id(): 72 bits in URL-safe base64
        assert left_a is not None
        assert 9 < left_a <= 10
        assert left_b is None
        assert timed.free() == 1


async def test_late_release_is_reported_and_double_release_is_harmless(
    cachify: Cachify, caplog: pytest.LogCaptureFixture
) -> None:
    p = cachify.pool('late', max_size=1, slot_exp=0.1)
    lease = p.acquire()
    await asyncio.sleep(0.2)
    newcomer = p.acquire()  # the expired slot's place is someone else's now
    with caplog.at_level(logging.WARNING, logger='py_cachify'):
        assert lease.release() is False
    assert 'had expired before it was released' in caplog.text
    assert lease.lost
    assert p.size() == 1  # the newcomer's slot is untouched
    assert newcomer.release() is True
    assert newcomer.release() is True  # idempotent: nothing is sent again
    assert p.size() == 0


class _ReplyLost:
    """A backend whose acquire runs on the real store but whose reply never arrives."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.wakeups = inner, inner.wakeups

    def run(self, call: Call) -> object:
        reply = self.inner.run(call)
        if call.script == 'acquire':
            raise CachifyBackendError(call.pool, 'ConnectionError: reply lost')
        return reply

    async def arun(self, call: Call) -> object:
        reply = await self.inner.arun(call)
        if call.script == 'acquire':
            raise CachifyBackendError(call.pool, 'ConnectionError: reply lost')
        return reply


class _Slow:
    """A backend that runs `script` on the real store, then takes its time to answer."""

    def __init__(self, inner: Any, script: str, before: bool = False, delay: float = 0.3) -> None:
        self.inner, self.wakeups, self.script, self.before, self.delay = inner, inner.wakeups, script, before, delay

    def run(self, call: Call) -> object:
        return self.inner.run(call)

    async def arun(self, call: Call) -> object:
        if call.script == self.script and self.before:
            await asyncio.sleep(self.delay)
        reply = await self.inner.arun(call)
        if call.script == self.script and not self.before:
            await asyncio.sleep(self.delay)
        return reply


async def test_cancelled_while_the_acquire_reply_is_in_flight_gives_the_slot_back(cachify: Cachify) -> None:
    settings = cachify.settings
    # The reply "takes" 60 s: the task is surely still waiting for it when it is cancelled.
    slow = Settings(_Slow(settings.backend, 'acquire', delay=60), settings.prefix, 600)  # type: ignore[arg-type]
    task = asyncio.create_task(pool('in-flight', max_size=1, settings=slow).__aenter__())
    try:
        await await_until(lambda: _held(cachify, 'in-flight'), what='the acquire landed')
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await cachify.pool('in-flight', max_size=1).asize() == 0


async def test_a_release_cancelled_midway_still_completes(cachify: Cachify) -> None:
    settings = cachify.settings
    slow = Settings(_Slow(settings.backend, 'release', before=True), settings.prefix, 600)  # type: ignore[arg-type]
    p = pool('shielded', max_size=1, settings=slow)
    exiting = asyncio.Event()

    async def body() -> None:
        async with p:
            exiting.set()

    task = asyncio.create_task(body())
    await exiting.wait()
    await asyncio.sleep(0.05)  # likely inside the (slow) release by now; if not, the exit is cancelled instead
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await await_until(lambda: _empty(p), what='the release completed')


async def test_an_acquire_whose_reply_is_lost_gives_its_slot_back(cachify: Cachify, api: Api) -> None:
    settings = cachify.settings
    lossy = Settings(_ReplyLost(settings.backend), settings.prefix, 600)  # type: ignore[arg-type]
    with pytest.raises(CachifyBackendError, match='reply lost'):
        async with api.hold(pool('lost-reply', max_size=1, settings=lossy)):
            pass
    assert await api.size(cachify.pool('lost-reply', max_size=1)) == 0


def test_a_pool_s_wake_up_channel_shares_its_hash_tag() -> None:
    keys = pool_keys('PYC-jobs')
    assert {k.split('}')[0] for k in (keys.slots, keys.queue, keys.leases, keys.channel)} == {'{PYC-jobs'}


def test_timeout_needs_nowait_false_and_must_be_sane() -> None:
    with pytest.raises(ValueError, match='nowait=False'):
        pool('k', 1, timeout=1)
    with pytest.raises(ValueError, match='-1'):
        pool('k', 1, nowait=False, timeout=-1)
    with pytest.raises(TypeError, match="'soon'"):
        pool('k', 1, nowait=False, timeout='soon')  # type: ignore[arg-type]


@pytest.mark.usefixtures('no_fallback_poll')
@pytest.mark.parametrize('client_kind', ['sync', 'async'])
async def test_waiters_are_woken_again_after_the_subscriber_connection_drops(
    redis_url: str, redis_client: redis.Redis, client_kind: str
) -> None:
    # A killed pub/sub connection reconnects and subscribes again: wake-ups resume.
    sync_client = redis.Redis.from_url(redis_url) if client_kind == 'sync' else None
    async_client = redis.asyncio.Redis.from_url(redis_url)
    cachify = init_cachify(sync_client, async_client, prefix=f'dropped-{client_kind}-', is_global=False)
    holder = cachify.pool('dropped', max_size=1)
    waiter = cachify.pool('dropped', max_size=1, nowait=False, timeout=15)

    async def hand_over() -> None:
        entered, leave = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(release_later(holder, Api('async'), entered, leave))
        await entered.wait()
        asyncio.get_running_loop().call_later(0.1, leave.set)
        async with waiter:
            pass
        await task

    try:
        await hand_over()  # subscribes
        assert redis_client.execute_command('CLIENT', 'KILL', 'TYPE', 'pubsub') >= 1  # type: ignore[no-untyped-call]
        # No pause needed: the listener notices, reconnects and subscribes again, and that
        # subscription wakes every waiter of the channel (the waiter's timeout is 15 s).
        await hand_over()
    finally:
        await async_client.aclose()
        if sync_client is not None:
            sync_client.close()
