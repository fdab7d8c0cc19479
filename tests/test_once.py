"""The once contract on every backend and both APIs: one call per key at a time, the others answered."""

from __future__ import annotations

import asyncio
import threading

import pytest

from py_cachify import Cachify, CachifyLockError, init_cachify, once

from .conftest import Api
from .test_cached import AsyncDictClient, DictClient
from .waiting import TIMEOUT, await_until


async def test_a_second_call_while_one_runs_gets_return_on_locked(cachify: Cachify, api: Api) -> None:
    inside, go = threading.Event(), threading.Event()

    @cachify.once('report-{day}', return_on_locked='busy')
    def report(day: int) -> str:
        inside.set()
        go.wait(TIMEOUT)
        return f'report {day}'

    @cachify.once('report-{day}', return_on_locked='busy')
    async def areport(day: int) -> str:
        inside.set()
        await asyncio.to_thread(go.wait, TIMEOUT)
        return f'report {day}'

    if api.mode == 'sync':
        first = asyncio.ensure_future(asyncio.to_thread(report, 1))
        await await_until(inside.is_set)
        assert report(1) == 'busy'
        assert report.is_locked(1)
        assert not report.is_locked(2)  # another key is another lock
    else:
        first = asyncio.ensure_future(areport(1))
        await await_until(inside.is_set)
        assert await areport(1) == 'busy'
        assert await areport.is_locked(1)
        assert not await areport.is_locked(2)
    go.set()
    assert await first == 'report 1'
    assert not report.is_locked(1)
    assert report(1) == 'report 1'  # free again once the first call is done


async def test_raise_on_locked_raises_naming_the_key(cachify: Cachify, api: Api) -> None:
    if api.mode == 'sync':

        @cachify.once('nested', raise_on_locked=True)
        def nested(depth: int) -> int:
            return depth if depth == 0 else nested(depth - 1)

        with pytest.raises(CachifyLockError, match='nested-once is already locked!'):
            nested(1)
        assert nested(0) == 0
    else:

        @cachify.once('nested', raise_on_locked=True)
        async def anested(depth: int) -> int:
            return depth if depth == 0 else await anested(depth - 1)

        with pytest.raises(CachifyLockError, match='nested-once is already locked!'):
            await anested(1)
        assert await anested(0) == 0


async def test_the_lock_is_given_back_when_the_call_raises(cachify: Cachify) -> None:
    @cachify.once('failing', raise_on_locked=True)
    def failing() -> None:
        raise ZeroDivisionError

    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            failing()
    assert not failing.is_locked()


async def test_many_tasks_at_once_run_the_function_once(cachify: Cachify) -> None:
    runs = 0
    go = asyncio.Event()

    @cachify.once('crowd')
    async def crowd() -> str:
        nonlocal runs
        runs += 1
        await go.wait()
        return 'ran'

    tasks = [asyncio.ensure_future(crowd()) for _ in range(20)]
    await await_until(lambda: sum(t.done() for t in tasks) == 19)
    go.set()
    results = await asyncio.gather(*tasks)
    assert results.count('ran') == 1
    assert results.count(None) == 19
    assert runs == 1


async def test_release_frees_a_call_stuck_holding_the_lock(cachify: Cachify) -> None:
    @cachify.once('stuck')
    def stuck() -> str:
        return 'ran'

    lease = await cachify.lock('stuck-once').aacquire()  # a call that never finishes
    assert stuck() is None
    stuck.release()
    assert stuck() == 'ran'
    assert lease.release() is False


def test_once_on_a_client_with_only_get_set_delete(no_global: None) -> None:
    store = DictClient()
    init_cachify(store, AsyncDictClient(store), prefix='once-proto-')

    @once('proto', return_on_locked='locked')
    def proto() -> str:
        return 'locked' if proto() == 'locked' else 'not excluded'

    assert proto() == 'locked'
    assert store.data == {}
