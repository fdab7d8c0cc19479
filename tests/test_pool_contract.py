"""The pool contract, held to every backend (embedded, Redis, fakeredis) and both APIs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from py_cachify import Cachify, CachifyPoolFullError, pool
from py_cachify.ops import acquire_call, attempt, count, flag, release_call, size_call

from .conftest import Api
from .waiting import await_until


async def empty(p: pool) -> bool:
    return await p.asize() == 0


async def test_size_counts_holders(cachify: Cachify, api: Api) -> None:
    p = cachify.pool('sized', max_size=3)
    assert await api.size(p) == 0
    async with api.hold(p) as held:
        assert held is p
        assert await api.size(p) == 1
    assert await api.size(p) == 0


async def test_full_pool_raises_and_names_the_pool(cachify: Cachify, api: Api) -> None:
    p = cachify.pool('tight', max_size=2)
    async with api.hold(p), api.hold(p):
        with pytest.raises(CachifyPoolFullError, match="'tight'.*max_size=2") as info:
            async with api.hold(p):
                pytest.fail('entered a full pool')
        assert info.value.key == 'tight'
        assert info.value.max_size == 2
        assert await api.size(p) == 2
    assert await api.size(p) == 0


async def test_nested_entries_take_and_release_their_own_slots(cachify: Cachify, api: Api) -> None:
    p = cachify.pool('nested', max_size=2)
    async with api.hold(p):
        async with api.hold(p):
            assert await api.size(p) == 2
            with pytest.raises(CachifyPoolFullError):
                async with api.hold(p):
                    pass
            assert await api.size(p) == 2
        assert await api.size(p) == 1
    assert await api.size(p) == 0


async def test_slot_is_released_when_the_body_raises(cachify: Cachify, api: Api) -> None:
    p = cachify.pool('raising', max_size=1)
    with pytest.raises(ZeroDivisionError):
        async with api.hold(p):
            1 / 0  # noqa: B018
    assert await api.size(p) == 0
    async with api.hold(p):
        assert await api.size(p) == 1


async def test_slot_is_released_when_an_async_body_is_cancelled(cachify: Cachify) -> None:
    p = cachify.pool('cancelled', max_size=1)
    inside = asyncio.Event()

    async def body() -> None:
        async with p:
            inside.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(body())
    try:
        await inside.wait()
        assert await p.asize() == 1
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await p.asize() == 0


async def test_expired_slot_stops_counting_and_its_late_exit_is_harmless(cachify: Cachify, api: Api) -> None:
    p = cachify.pool('expiring', max_size=1, slot_exp=0.2)
    async with api.hold(p):
        assert await api.size(p) == 1
        await asyncio.sleep(0.35)
        # The holder is not interrupted, but its slot no longer counts: another may enter.
        assert await api.size(p) == 0
        async with api.hold(p):
            assert await api.size(p) == 1
        assert await api.size(p) == 0
    assert await api.size(p) == 0


async def test_default_slot_expiration_applies_when_the_pool_gives_none(
    make_cachify: Callable[..., Cachify], api: Api
) -> None:
    short = make_cachify(default_pool_slot_expiration=0.2)
    p = short.pool('defaulted', max_size=1)
    async with api.hold(p):
        await asyncio.sleep(0.35)
        assert await api.size(p) == 0
    forever = short.pool('forever', max_size=1, slot_exp=None)
    async with api.hold(forever):
        await asyncio.sleep(0.35)
        assert await api.size(forever) == 1


async def test_same_key_is_one_pool_across_pool_objects(cachify: Cachify, api: Api) -> None:
    first, second = cachify.pool('shared', max_size=1), cachify.pool('shared', max_size=1)
    async with api.hold(first):
        with pytest.raises(CachifyPoolFullError):
            async with api.hold(second):
                pass
        assert await api.size(second) == 1


async def test_pools_of_other_keys_and_prefixes_are_independent(make_cachify: Callable[..., Cachify], api: Api) -> None:
    one, other = make_cachify(prefix='one-'), make_cachify(prefix='other-')
    async with api.hold(one.pool('k', max_size=1)):
        async with api.hold(one.pool('k2', max_size=1)), api.hold(other.pool('k', max_size=1)):
            assert await api.size(other.pool('k', max_size=1)) == 1


async def test_purge_drops_only_expired_slots(cachify: Cachify) -> None:
    short = cachify.pool('purged', max_size=5, slot_exp=0.1)
    long = cachify.pool('purged', max_size=5)
    with short, short, long:
        await asyncio.sleep(0.25)
        assert short.purge() == 2
        assert await short.apurge() == 0
        assert short.size() == 1


async def test_one_pool_object_shared_by_tasks(cachify: Cachify) -> None:
    p = cachify.pool('tasks', max_size=4)
    holders = 0
    peak = 0
    admitted = 0

    async def worker() -> None:
        nonlocal holders, peak, admitted
        for _ in range(5):
            try:
                async with p:
                    holders += 1
                    admitted += 1
                    peak = max(peak, holders)
                    await asyncio.sleep(0.002)
                    holders -= 1
            except CachifyPoolFullError:
                await asyncio.sleep(0.001)

    await asyncio.gather(*(worker() for _ in range(20)))
    assert peak == 4
    assert admitted >= 4
    assert await p.asize() == 0


def test_cachify_methods_bind_to_their_instance(cachify: Cachify) -> None:
    p = cachify.pool('bound', max_size=1, slot_exp=5)
    assert (p.key, p.max_size, p._max_size) == ('bound', 1, 1)

    @cachify.pooled(key='bound-fn', max_size=1)
    def work() -> int:
        return work.size()

    assert work() == 1
    assert work.size() == 0


async def test_an_acquire_resent_with_the_same_slot_id_counts_once(cachify: Cachify) -> None:
    # redis-py re-sends a command after a timeout; the pool must not count that twice.
    backend, prefix = cachify.settings.backend, cachify.settings.prefix
    call = acquire_call(prefix, 'resent', 'slot-a', 2, 10_000)
    assert attempt(backend.run(call), call).acquired
    assert attempt(await backend.arun(call), call).acquired
    assert count(backend.run(size_call(prefix, 'resent')), call) == 1
    assert flag(backend.run(release_call(prefix, 'resent', 'slot-a', 2)), call)
    assert not flag(backend.run(release_call(prefix, 'resent', 'slot-a', 2)), call)


async def test_a_cancelled_async_with_is_cancelled_and_keeps_no_slot(cachify: Cachify) -> None:
    # Cancel tasks at every point of their `async with`: each accepted cancellation must
    # surface as CancelledError (redis-py 8.1 can swallow one that lands mid-command), and
    # no slot may stay behind.
    p = cachify.pool('cancel-points', max_size=100)

    async def body() -> None:
        async with p:
            await asyncio.sleep(0)

    swallowed = []
    for point in range(40):
        task = asyncio.create_task(body())
        try:
            for _ in range(point % 8):
                await asyncio.sleep(0)
            accepted = task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                continue
            if accepted:
                swallowed.append(point)
        finally:
            task.cancel()  # a no-op once it is done; else it must not outlive the test
    assert swallowed == []
    # Shielded releases finish in the background: on a loaded machine, or a cluster, in a while.
    await await_until(lambda: empty(p), what='every slot given back')
