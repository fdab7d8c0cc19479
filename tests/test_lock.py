"""The lock contract on every backend and both APIs, plus processes, a SIGKILLed holder and a killed subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis

from py_cachify import Cachify, CachifyInitError, CachifyLockError, init_cachify, lock
from py_cachify.cacheops import lock_pool_name
from py_cachify.ops import pool_keys

from .conftest import Api
from .waiting import TIMEOUT, await_until, run_to_end


@pytest.fixture
def no_fallback_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a message (or expiry) may wake a waiter: the safety-net polls are made too slow to matter."""
    monkeypatch.setattr(sys.modules['py_cachify.pool'], 'FALLBACK_POLL', 60.0)


@contextlib.asynccontextmanager
async def hold(api: Api, lk: lock) -> AsyncIterator[lock]:
    if api.mode == 'sync':
        with lk as held:
            yield held
    else:
        async with lk as held:
            yield held


async def is_locked(api: Api, lk: lock) -> bool:
    return lk.is_locked() if api.mode == 'sync' else await lk.is_alocked()


def channel(cachify: Cachify, key: str) -> str:
    return pool_keys(cachify.settings.prefix + lock_pool_name(key)).channel


async def test_a_held_lock_refuses_a_second_holder_and_names_its_key(cachify: Cachify, api: Api) -> None:
    lk = cachify.lock('job')
    assert not await is_locked(api, lk)
    async with hold(api, lk) as held:
        assert held is lk
        assert await is_locked(api, cachify.lock('job'))
        with pytest.raises(CachifyLockError, match='job is already locked!') as info:
            async with hold(api, cachify.lock('job')):
                pytest.fail('took a held lock')
        assert info.value.key == 'job'
        async with hold(api, cachify.lock('other-job')):
            pass
    assert not await is_locked(api, lk)


async def test_release_gives_back_only_the_callers_own_hold(cachify: Cachify, api: Api) -> None:
    mine, theirs = cachify.lock('owned'), cachify.lock('owned')
    async with hold(api, mine):
        # Another lock object of the same key holds nothing: its release frees nothing.
        assert (theirs.release() if api.mode == 'sync' else await theirs.arelease()) is False
        assert await is_locked(api, mine)
        assert (mine.release() if api.mode == 'sync' else await mine.arelease()) is True
        assert not await is_locked(api, mine)
    # The exit after an explicit release has nothing left to give back, and says nothing.
    assert not await is_locked(api, mine)


async def test_force_release_frees_the_lock_whoever_holds_it(cachify: Cachify, api: Api) -> None:
    lease = await cachify.lock('broken').aacquire()
    other = cachify.lock('broken')
    assert (other.force_release() if api.mode == 'sync' else await other.aforce_release()) is True
    assert not await is_locked(api, other)
    async with hold(api, other):
        assert lease.release() is False  # its hold was broken: nothing of the new holder's goes
        assert await is_locked(api, other)


async def test_a_late_release_removes_nothing_of_the_next_holder(cachify: Cachify, api: Api) -> None:
    first = await cachify.lock('late', exp=0.2).aacquire()
    await await_until(lambda: _not(cachify.lock('late').is_alocked()), what='the first hold expiring')
    async with hold(api, cachify.lock('late', exp=30)) as second:
        assert (first.release() if api.mode == 'sync' else await first.arelease()) is False
        assert first.lost
        assert await is_locked(api, second)


async def _not(result: Any) -> bool:
    return not await result


async def test_a_waiter_takes_the_lock_when_it_expires(cachify: Cachify, api: Api) -> None:
    await cachify.lock('expiring', exp=0.3).aacquire()  # never released: only expiry frees it
    waiter = cachify.lock('expiring', nowait=False, timeout=TIMEOUT)
    async with hold(api, waiter):
        assert await is_locked(api, waiter)


async def test_a_waiter_gives_up_after_its_timeout(cachify: Cachify, api: Api) -> None:
    async with hold(api, cachify.lock('patient', exp=60)):
        started = time.monotonic()
        with pytest.raises(CachifyLockError, match='patient is already locked!'):
            async with hold(api, cachify.lock('patient', nowait=False, timeout=0.3)):
                pytest.fail('took a held lock')
        assert time.monotonic() - started >= 0.3


@pytest.mark.usefixtures('no_fallback_poll')
async def test_a_waiter_is_woken_by_the_release_not_by_its_poll(make_cachify: Callable[..., Cachify], api: Api) -> None:
    cachify = make_cachify(lock_poll_interval=60.0)
    try:
        elapsed = await _hand_over(cachify, api, 'woken')
        assert elapsed < TIMEOUT / 2  # a poll would have taken 60 s
    finally:
        await cachify.aclose()


async def _hand_over(cachify: Cachify, api: Api, key: str) -> float:
    """Seconds from a release to the waiting lock holding it (in a thread, or a task)."""
    lease = await cachify.lock(key, exp=60).aacquire()
    waiter = cachify.lock(key, nowait=False, timeout=TIMEOUT)

    def in_thread() -> float:
        with waiter:
            return time.monotonic()

    async def in_task() -> float:
        async with waiter:
            return time.monotonic()

    waiting = asyncio.ensure_future(asyncio.to_thread(in_thread) if api.mode == 'sync' else in_task())
    try:
        backend = cachify.settings.backend
        await await_until(lambda: backend.wakeups.waiting(channel(cachify, key)) or waiting.done())
        await asyncio.sleep(0.05)  # from its last try into its wait
        released = time.monotonic()
        await lease.arelease()
        return await waiting - released
    finally:
        if not waiting.done():
            waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)


async def test_extend_keeps_the_hold(cachify: Cachify, api: Api) -> None:
    lk = cachify.lock('kept', exp=0.5)
    async with hold(api, lk):
        assert (lk.extend(30) if api.mode == 'sync' else await lk.aextend(30)) is True
        (left,) = (await lk._pool.aholders()).values()
        assert left is not None
        assert left > 29


@pytest.mark.parametrize('backend', ['memory', 'redis'])
async def test_auto_renew_keeps_the_lock_past_exp(cachify: Cachify, api: Api) -> None:
    lost: list[str] = []
    renewed = cachify.lock('renewed', exp=0.9, auto_renew=True, on_lost=lost.append)
    async with hold(api, renewed):
        # Held for more than twice its exp, it must stay locked all along.
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            assert await renewed._pool.asize() == 1
            await asyncio.sleep(0.05)
    assert lost == []
    assert not await is_locked(api, renewed)


async def test_decorator_formats_its_key_and_attaches_is_locked_and_release(cachify: Cachify, api: Api) -> None:
    inside = threading.Event() if api.mode == 'sync' else asyncio.Event()
    go = threading.Event() if api.mode == 'sync' else asyncio.Event()

    if api.mode == 'sync':

        @cachify.lock('user-{user_id}')
        def work(user_id: int) -> int:
            inside.set()
            assert isinstance(go, threading.Event)
            go.wait(TIMEOUT)
            return user_id

        running = asyncio.ensure_future(asyncio.to_thread(work, 7))
        await await_until(inside.is_set)
        assert work.is_locked(7)
        assert not work.is_locked(8)
        with pytest.raises(CachifyLockError, match='user-7-lock is already locked!'):
            work(7)
        go.set()
        assert await running == 7
        assert not work.is_locked(7)
        await asyncio.to_thread(work, 8)
        assert work.release(8) is None
    else:

        @cachify.lock('user-{user_id}')
        async def awork(user_id: int) -> int:
            inside.set()
            assert isinstance(go, asyncio.Event)
            await go.wait()
            return user_id

        task = asyncio.ensure_future(awork(7))
        await await_until(inside.is_set)
        assert await awork.is_locked(7)
        assert not await awork.is_locked(8)
        with pytest.raises(CachifyLockError, match='user-7-lock is already locked!'):
            await awork(7)
        go.set()
        assert await task == 7
        assert not await awork.is_locked(7)
        assert await awork.release(7) is None


async def test_the_decorators_release_breaks_a_held_call(cachify: Cachify) -> None:
    @cachify.lock('breakable')
    def work() -> None: ...

    lease = await cachify.lock('breakable-lock').aacquire()
    assert work.is_locked()
    work.release()
    assert not work.is_locked()
    work()
    assert lease.release() is False


def test_bad_arguments_are_refused_before_anything_runs(no_global: None) -> None:
    with pytest.raises(TypeError, match='lock key must be a non-empty str, got 5'):
        lock(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r'exp must be seconds > 0, got -1'):
        lock('k', exp=-1)
    with pytest.raises(ValueError, match='timeout must be seconds >= 0'):
        lock('k', nowait=False, timeout=-1)
    with pytest.raises(ValueError, match='lock_poll_interval must be seconds > 0'):
        init_cachify(lock_poll_interval=0, is_global=False)
    with pytest.raises(CachifyInitError, match='did you forget to call `init_cachify`'):
        with lock('k'):
            pass


def test_timeout_without_waiting_is_ignored_as_in_3_1_0(cachify: Cachify) -> None:
    with cachify.lock('ignored', timeout=5):
        with pytest.raises(CachifyLockError):
            with cachify.lock('ignored', timeout=5):
                pass


def test_the_lock_lives_default_lock_expiration_by_redis_clock(make_cachify: Callable[..., Cachify]) -> None:
    cachify = make_cachify(default_lock_expiration=7)
    with cachify.lock('defaults') as lk:
        (left,) = lk._pool.holders().values()
        assert left is not None
        assert 6 < left <= 7
    with cachify.lock('forever', exp=None) as lk:
        assert list(lk._pool.holders().values()) == [None]


# -- processes, a killed holder, a killed subscriber (real redis-server) ------------------------


def _contender(url: str, prefix: str, rounds: int, start_at: float) -> None:
    client = redis.Redis.from_url(url)
    cachify = init_cachify(client, prefix=prefix, is_global=False)
    time.sleep(max(0.0, start_at - time.time()))
    for _ in range(rounds):
        with cachify.lock('counter', nowait=False, timeout=60):
            # A read-modify-write that loses updates unless the lock excludes the others.
            value = int(client.get('counted') or 0)
            time.sleep(0.001)
            client.set('counted', value + 1)
    cachify.close()


@pytest.mark.slow
def test_processes_contending_for_one_lock_never_overlap(redis_url: str, redis_client: redis.Redis) -> None:
    redis_client.delete('counted')
    ctx = multiprocessing.get_context('spawn')
    start_at = time.time() + 3.0  # spawning is slow and staggered: start together
    procs = [ctx.Process(target=_contender, args=(redis_url, 'contend-', 25, start_at)) for _ in range(4)]
    run_to_end(procs, 90)
    assert int(redis_client.get('counted') or 0) == 100
    assert redis_client.exists(pool_keys('contend-' + lock_pool_name('counter')).slots) == 0
    redis_client.delete('counted')


def _holder(url: str, held: Any) -> None:
    cachify = init_cachify(redis.Redis.from_url(url), prefix='killed-', is_global=False)
    cachify.lock('crash', exp=1).acquire()
    held.set()
    time.sleep(600)  # until SIGKILLed


@pytest.mark.slow
def test_a_sigkilled_holders_lock_comes_back_after_exp(redis_url: str) -> None:
    ctx = multiprocessing.get_context('spawn')
    held = ctx.Event()
    proc = ctx.Process(target=_holder, args=(redis_url, held))
    proc.start()
    cachify = init_cachify(redis.Redis.from_url(redis_url), prefix='killed-', is_global=False)
    try:
        assert held.wait(60)
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
        proc.join(30)
        assert cachify.lock('crash').is_locked()
        with cachify.lock('crash', nowait=False, timeout=TIMEOUT):
            assert cachify.lock('crash').is_locked()
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        cachify.close()


@pytest.fixture
def admin(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.mark.usefixtures('no_fallback_poll')
@pytest.mark.parametrize('backend', ['redis'])
async def test_waiters_are_still_woken_after_their_subscriber_connection_is_killed(
    make_cachify: Callable[..., Cachify], admin: redis.Redis, api: Api
) -> None:
    cachify = make_cachify(lock_poll_interval=60.0)
    try:
        await _hand_over(cachify, api, 'resubscribed')  # subscribed now
        assert admin.client_kill_filter(_type='pubsub') >= 1
        assert await _hand_over(cachify, api, 'resubscribed') < TIMEOUT / 2
    finally:
        await cachify.aclose()


def test_a_client_with_only_get_set_delete_serves_locks_and_refuses_pools(no_global: None) -> None:
    from .test_cached import DictClient

    cachify = init_cachify(DictClient(), is_global=False)
    with cachify.lock('proto', exp=5) as lk:
        assert lk.is_locked()
        with pytest.raises(CachifyLockError):
            with cachify.lock('proto'):
                pass
    assert not cachify.lock('proto').is_locked()
    with pytest.raises(CachifyInitError, match="pool 'pool-of-two' needs Redis"):
        with cachify.pool('pool-of-two', max_size=2):
            pass
