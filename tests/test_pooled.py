"""`@pooled` and `pool.pooled()`: keys from arguments, full-pool handling, metadata, size."""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any

import pytest

from py_cachify import Cachify, CachifyPoolFullError


def test_key_is_formatted_from_positional_keyword_and_default_arguments(cachify: Cachify) -> None:
    seen: list[tuple[int, int]] = []

    @cachify.pooled(key='user-{user_id}-{region}', max_size=1)
    def work(user_id: int, region: str = 'eu') -> int:
        seen.append((work.size(user_id), work.size(user_id, region='us')))
        return user_id

    assert work(7) == 7
    assert work(user_id=8, region='eu') == 8
    assert seen == [(1, 0), (1, 0)]
    assert work.size(7) == 0


def test_each_resolved_key_is_its_own_pool(cachify: Cachify) -> None:
    inside = threading.Event()
    leave = threading.Event()

    @cachify.pooled(key='user-{0}', max_size=1, raise_on_full=True)
    def work(*args: int) -> str:
        if args[0] == 1:
            inside.set()
            leave.wait(10)
        return 'done'

    thread = threading.Thread(target=work, args=(1,))
    thread.start()
    assert inside.wait(10)
    try:
        assert work(2) == 'done'
        with pytest.raises(CachifyPoolFullError):
            work(1)
    finally:
        leave.set()
        thread.join()


def test_full_pool_returns_none_or_calls_on_full_with_the_arguments(cachify: Cachify) -> None:
    calls: list[tuple[Any, ...]] = []

    def on_full(*args: Any, **kwargs: Any) -> str:
        calls.append((args, kwargs))
        return 'shed'

    @cachify.pooled(key='shed', max_size=1)
    def quiet(x: int) -> str:
        return 'ran'

    @cachify.pooled(key='shed', max_size=1, on_full=on_full)
    def loud(x: int, *, flag: bool = False) -> str:
        return 'ran'

    with cachify.pool('shed-pool', max_size=1):
        assert quiet(1) is None
        assert loud(2, flag=True) == 'shed'
    assert calls == [((2,), {'flag': True})]
    assert loud(3) == 'ran'


async def test_async_on_full_is_awaited_and_raise_on_full_wins(cachify: Cachify) -> None:
    async def on_full(x: int) -> str:
        await asyncio.sleep(0)
        return f'shed {x}'

    @cachify.pooled(key='a', max_size=1, on_full=on_full)
    async def soft(x: int) -> str:
        return 'ran'

    @cachify.pooled(key='a', max_size=1, on_full=on_full, raise_on_full=True)
    async def hard(x: int) -> str:
        return 'ran'

    async with cachify.pool('a-pool', max_size=1):
        assert await soft(1) == 'shed 1'
        with pytest.raises(CachifyPoolFullError):
            await hard(1)
        assert await soft.size(0) == 1
    assert await soft(2) == 'ran'


async def test_body_errors_are_not_taken_for_a_full_pool(cachify: Cachify) -> None:
    called = []

    @cachify.pooled(key='inner-full', max_size=1, on_full=lambda: called.append(1))
    async def work() -> None:
        raise CachifyPoolFullError('some-other-pool', 1)

    with pytest.raises(CachifyPoolFullError, match='some-other-pool'):
        await work()
    assert called == []
    assert await work.size() == 0


def test_wrapper_keeps_metadata(cachify: Cachify) -> None:
    @cachify.pooled(key='meta', max_size=1)
    def documented(a: int) -> int:
        """Doubles."""
        return a * 2

    assert documented.__name__ == 'documented'
    assert documented.__doc__ == 'Doubles.'
    assert documented.__wrapped__(2) == 4
    assert inspect.iscoroutinefunction(cachify.pooled(key='m', max_size=1)(_async_noop))


async def _async_noop() -> None:
    return None


async def test_pool_pooled_uses_that_very_pool(cachify: Cachify) -> None:
    p = cachify.pool('instance', max_size=2)

    @p.pooled()
    async def work() -> int:
        return await p.asize()

    @p.pooled(on_full=lambda: 'full')
    def sync_work() -> int:
        return p.size()

    assert await work() == 1
    assert sync_work() == 1
    async with p, p:
        assert await work() is None
        assert sync_work() == 'full'
        assert await work.size() == 2


async def test_slot_is_released_when_the_decorated_call_is_cancelled(cachify: Cachify) -> None:
    started = asyncio.Event()

    @cachify.pooled(key='cancel', max_size=1)
    async def slow() -> None:
        started.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(slow())
    await started.wait()
    assert await slow.size() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await slow.size() == 0


async def test_a_callable_object_whose_call_is_async_holds_its_slot_while_it_runs(cachify: Cachify) -> None:
    class Job:
        async def __call__(self, n: int) -> int:
            await asyncio.sleep(0)
            return await pool_of_job.asize()

    pool_of_job = cachify.pool('job-object-pool', max_size=1)
    work = cachify.pooled(key='job-object', max_size=1)(Job())
    assert inspect.iscoroutinefunction(work)
    assert await work(1) == 1  # held while it ran, not released before
    assert await pool_of_job.asize() == 0


async def test_extend_inside_a_pooled_call_keeps_that_call_s_slot(cachify: Cachify) -> None:
    p = cachify.pool('extended-in-call', max_size=1, slot_exp=0.3)

    @p.pooled(raise_on_full=True)
    def work() -> bool:
        return p.extend(60)

    @p.pooled(raise_on_full=True)
    async def awork() -> int:
        assert await p.aextend(60)
        await asyncio.sleep(0.4)  # past slot_exp: only the extension keeps the slot
        return await p.asize()

    assert work() is True
    assert await awork() == 1
    assert await p.asize() == 0
