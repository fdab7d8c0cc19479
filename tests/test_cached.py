"""The cached contract on every backend and both APIs: hits, ttl, reset, codecs, stampedes, 3.1.0's values."""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from py_cachify import Cachify, CachifyBackendError, cached, init_cachify

from .conftest import Api
from .waiting import TIMEOUT, await_until, run_to_end


class DictClient:
    """A client with py-cachify 3.1.0's protocol only (get, set with nx/ex, delete), no Redis behind it."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[Any, float | None]] = {}
        self.lock = threading.Lock()

    def get(self, name: str) -> Any:
        with self.lock:
            value, until = self.data.get(name, (None, None))
            if until is not None and until <= time.time():
                del self.data[name]
                return None
            return value

    def set(self, name: str, value: Any, *, ex: int | None = None, nx: bool = False) -> bool:
        if nx and self.get(name) is not None:
            return False
        with self.lock:
            self.data[name] = (value, None if ex is None else time.time() + ex)
        return True

    def delete(self, *names: str) -> int:
        with self.lock:
            return sum(self.data.pop(name, None) is not None for name in names)


class AsyncDictClient:
    """`DictClient` behind awaitables (py-cachify 3.1.0's AsyncClient protocol)."""

    def __init__(self, store: DictClient) -> None:
        self.store = store

    async def get(self, name: str) -> Any:
        return self.store.get(name)

    async def set(self, name: str, value: Any, *, ex: int | None = None, nx: bool = False) -> bool:
        return self.store.set(name, value, ex=ex, nx=nx)

    async def delete(self, *names: str) -> int:
        return self.store.delete(*names)


class Calls:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def add(self) -> int:
        with self.lock:
            self.count += 1
            return self.count


def decorate(cachify: Cachify, api: Api, key: str, body: Callable[..., Any], **options: Any) -> Callable[..., Any]:
    """`cachify.cached(key, **options)` over a sync or an async function running `body`; returns
    an async callable either way (a sync function runs in a thread)."""
    if api.mode == 'sync':
        sync = cachify.cached(key, **options)(body)

        async def call(*args: Any) -> Any:
            return await asyncio.to_thread(sync, *args)

        call.reset = lambda *args: asyncio.to_thread(sync.reset, *args)  # type: ignore[attr-defined]
        return call

    async def async_body(*args: Any) -> Any:
        return body(*args)

    async_body.__signature__ = inspect.signature(body)  # type: ignore[attr-defined]  # the key's fields
    return cachify.cached(key, **options)(async_body)


async def test_a_hit_skips_the_function_and_reset_forgets_one_call(cachify: Cachify, api: Api) -> None:
    calls = Calls()

    def double(x: int) -> int:
        calls.add()
        return x * 2

    f = decorate(cachify, api, 'double-{x}', double)
    assert await f(2) == 4
    assert await f(2) == 4
    assert await f(3) == 6
    assert calls.count == 2
    await f.reset(2)  # type: ignore[attr-defined]
    assert await f(2) == 4
    assert await f(3) == 6
    assert calls.count == 3


async def test_a_value_lives_ttl_seconds(cachify: Cachify, api: Api) -> None:
    calls = Calls()
    f = decorate(cachify, api, 'short', lambda: calls.add(), ttl=1)
    assert await f() == 1
    assert await f() == 1

    async def recomputed() -> bool:
        return await f() == 2

    await await_until(recomputed, what='the value expiring after ttl=1')


async def test_ttl_none_never_expires_and_default_cache_ttl_applies(
    make_cachify: Callable[..., Cachify], backend: str
) -> None:
    cachify = make_cachify(default_cache_ttl=100)

    @cachify.cached('defaulted')
    def defaulted() -> int:
        return 1

    @cachify.cached('forever', ttl=None)
    def forever() -> int:
        return 1

    defaulted()
    forever()
    if backend in ('redis', 'cluster', 'fakeredis'):
        client: Any = cachify.settings.backend._sync['cache_fetch'].registered_client  # type: ignore[attr-defined]
        prefix = cachify.settings.prefix
        assert 99 <= client.ttl(f'{prefix}defaulted-cached') <= 100
        assert client.ttl(f'{prefix}forever-cached') == -1


async def test_an_exception_caches_nothing(cachify: Cachify, api: Api) -> None:
    calls = Calls()

    def flaky() -> int:
        if calls.add() == 1:
            raise ZeroDivisionError
        return calls.count

    f = decorate(cachify, api, 'flaky', flaky)
    with pytest.raises(ZeroDivisionError):
        await f()
    assert await f() == 2
    assert await f() == 2


class Unpicklable:
    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self) -> Any:
        raise TypeError('not picklable')


async def test_encoders_and_decoders_store_what_pickle_cannot(cachify: Cachify, api: Api) -> None:
    calls = Calls()

    def make() -> Unpicklable:
        calls.add()
        return Unpicklable(5)

    plain = decorate(cachify, api, 'plain', make)
    with pytest.raises(TypeError, match='not picklable'):
        await plain()
    coded = decorate(cachify, api, 'coded', make, enc_dec=(lambda u: u.value, Unpicklable))
    first, second = await coded(), await coded()
    assert (first.value, second.value, calls.count) == (5, 5, 2)


async def test_a_stampede_of_100_misses_computes_once(cachify: Cachify) -> None:
    calls = Calls()

    @cachify.cached('stampede')
    async def slow() -> int:
        calls.add()
        await asyncio.sleep(0.2)
        return 42

    assert await asyncio.gather(*(slow() for _ in range(100))) == [42] * 100
    assert calls.count == 1


@pytest.mark.parametrize('backend', ['memory', 'redis'])
def test_a_stampede_of_threads_computes_once(cachify: Cachify) -> None:
    calls = Calls()

    @cachify.cached('threads')
    def slow() -> int:
        calls.add()
        time.sleep(0.2)
        return 42

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(slow())) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert results == [42] * 20
    assert calls.count == 1


async def test_waiters_compute_themselves_after_stampede_timeout(cachify: Cachify) -> None:
    release = asyncio.Event()
    calls = Calls()

    @cachify.cached('stuck', stampede_timeout=0.3)
    async def stuck() -> int:
        if calls.add() == 1:
            await release.wait()  # the first computer hangs
        return calls.count

    first = asyncio.ensure_future(stuck())
    try:
        await await_until(lambda: calls.count == 1)
        assert await stuck() == 2  # it waited 0.3 s, then computed itself
    finally:
        release.set()
        await first


async def test_when_the_computer_fails_a_waiter_computes_instead(cachify: Cachify) -> None:
    calls = Calls()
    started = asyncio.Event()
    fail = asyncio.Event()

    @cachify.cached('handed-on')
    async def compute() -> int:
        if calls.add() == 1:
            started.set()
            await fail.wait()
            raise RuntimeError('first computer failed')
        return 7

    first = asyncio.ensure_future(compute())
    await started.wait()
    waiter = asyncio.ensure_future(compute())
    await await_until(lambda: cachify.settings.backend.wakeups.waiting(_channel(cachify, 'handed-on')))
    fail.set()
    with pytest.raises(RuntimeError):
        await first
    assert await waiter == 7
    assert calls.count == 2


def _channel(cachify: Cachify, key: str) -> str:
    from py_cachify.cacheops import cache_channel

    return cache_channel(f'{cachify.settings.prefix}{key}-cached')


@pytest.mark.parametrize('backend', ['redis'])
async def test_values_written_by_py_cachify_3_1_0_are_read_and_ours_readable_by_it(cachify: Cachify) -> None:
    client: Any = cachify.settings.backend._sync['cache_fetch'].registered_client  # type: ignore[attr-defined]
    prefix = cachify.settings.prefix
    # 3.1.0 stores pickle.dumps(value) (after the encoder) at '<prefix><key>-cached'.
    client.set(f'{prefix}old-3-cached', pickle.dumps({'from': '3.1.0'}))

    @cachify.cached('old-{n}')
    def old(n: int) -> dict[str, str]:
        pytest.fail('recomputed a value 3.1.0 had cached')

    assert old(3) == {'from': '3.1.0'}

    @cachify.cached('new-{n}')
    def new(n: int) -> list[int]:
        return [n]

    new(4)
    assert pickle.loads(client.get(f'{prefix}new-4-cached')) == [4]


def test_a_client_with_only_get_set_delete_serves_cached(no_global: None) -> None:
    store = DictClient()
    cachify = init_cachify(store, AsyncDictClient(store), prefix='proto-', is_global=False)
    calls = Calls()

    @cachify.cached('p-{x}', ttl=60)
    def f(x: int) -> int:
        calls.add()
        return x

    @cachify.cached('p-{x}', ttl=60)
    async def af(x: int) -> int:
        calls.add()
        return x

    assert (f(1), f(1), asyncio.run(af(1)), calls.count) == (1, 1, 1, 1)
    assert pickle.loads(store.get('proto-p-1-cached')) == 1
    f.reset(1)
    assert f(1) == 1
    assert calls.count == 2


def test_bad_arguments_are_refused_at_decoration(no_global: None) -> None:
    with pytest.raises(ValueError, match='ttl must be seconds >= 1'):
        cached('k', ttl=0)
    with pytest.raises(TypeError, match='ttl must be seconds'):
        cached('k', ttl='10')  # type: ignore[arg-type]
    with pytest.raises(TypeError, match='enc_dec must be a pair'):
        cached('k', enc_dec=(str,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r'names \{y\}'):
        cached('k-{y}')(lambda x: x)


@pytest.mark.parametrize('backend', ['redis'])
def test_a_redis_failure_is_a_backend_error(cachify: Cachify) -> None:
    client: Any = cachify.settings.backend._sync['cache_fetch'].registered_client  # type: ignore[attr-defined]
    client.lpush(f'{cachify.settings.prefix}wrong-cached', 'a list, not a value')

    @cachify.cached('wrong')
    def f() -> int:
        return 1

    with pytest.raises(CachifyBackendError, match='WRONGTYPE'):
        f()


def _stampeder(url: str, computed: Any, lock: Any, start_at: float, out: Any) -> None:
    cachify = init_cachify(redis.Redis.from_url(url), prefix='stampede-procs-', is_global=False)

    @cachify.cached('shared')
    def slow() -> int:
        with lock:
            computed.value += 1
        time.sleep(0.5)
        return 99

    time.sleep(max(0.0, start_at - time.time()))
    result = slow()
    with lock:
        out.value += result
    cachify.close()


@pytest.mark.slow
def test_a_stampede_across_processes_computes_once(redis_url: str, redis_client: redis.Redis) -> None:
    redis_client.delete('stampede-procs-shared-cached')
    ctx = multiprocessing.get_context('spawn')
    lock = ctx.Lock()
    computed, out = ctx.Value('i', 0, lock=False), ctx.Value('i', 0, lock=False)
    start_at = time.time() + 3.0
    procs = [ctx.Process(target=_stampeder, args=(redis_url, computed, lock, start_at, out)) for _ in range(4)]
    run_to_end(procs, 60)
    assert out.value == 4 * 99
    assert computed.value == 1
    redis_client.delete('stampede-procs-shared-cached')


@pytest.mark.parametrize('backend', ['redis'])
async def test_waiters_get_the_value_after_their_subscriber_connection_is_killed(
    make_cachify: Callable[..., Cachify], redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    import py_cachify.cacheops

    # Only a message can wake a waiter in time: the polls are made too slow to matter.
    monkeypatch.setattr(py_cachify.cacheops, '_WAITER_POLL', 60.0)
    cachify = make_cachify(lock_poll_interval=60.0)
    go = asyncio.Event()
    computing = asyncio.Event()

    @cachify.cached('killed-sub', stampede_timeout=TIMEOUT * 2)
    async def compute() -> int:
        computing.set()
        await go.wait()
        return 5

    channel = _channel(cachify, 'killed-sub')

    async def stampede(kill: bool) -> float:
        """Seconds from the computer's store to its waiter having the value."""
        go.clear()
        computing.clear()
        await compute.reset()  # type: ignore[attr-defined]
        first = asyncio.ensure_future(compute())
        waiter: asyncio.Future[int] | None = None
        try:
            await computing.wait()
            waiter = asyncio.ensure_future(compute())
            await await_until(lambda: cachify.settings.backend.wakeups.waiting(channel))
            await asyncio.sleep(0.05)  # from its last look into its wait
            if kill:
                assert redis_client.client_kill_filter(_type='pubsub') >= 1
            go.set()
            assert await first == 5
            stored = time.monotonic()
            assert await waiter == 5
            return time.monotonic() - stored
        finally:
            go.set()
            await asyncio.gather(first, *([waiter] if waiter else []), return_exceptions=True)

    try:
        await stampede(kill=False)  # subscribed now
        assert await stampede(kill=True) < TIMEOUT / 2  # a poll would have taken 60 s
    finally:
        await cachify.aclose()
