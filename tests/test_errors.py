"""Bad input fails loudly before Redis; Redis failures are errors, never "pool full"."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from py_cachify import (
    Cachify,
    CachifyBackendError,
    CachifyInitError,
    CachifyPoolFullError,
    init_cachify,
    pool,
    pooled,
)


@pytest.fixture
def dead_redis() -> Iterator[Cachify]:
    """A Cachify whose Redis refuses connections: any call that reached it would fail."""
    # No retries: the point is that the first refusal surfaces, quickly.
    sync_client = redis.Redis(host='127.0.0.1', port=1, retry=Retry(NoBackoff(), 0))
    async_client = redis.asyncio.Redis(host='127.0.0.1', port=1, retry=AsyncRetry(NoBackoff(), 0))
    yield init_cachify(sync_client, async_client, is_global=False)
    sync_client.close()


@pytest.mark.parametrize(
    ('kwargs', 'error', 'named'),
    [
        ({'max_size': 0}, ValueError, '0'),
        ({'max_size': -3}, ValueError, '-3'),
        ({'max_size': '5'}, TypeError, "'5'"),
        ({'max_size': 2.0}, TypeError, '2.0'),
        ({'max_size': True}, TypeError, 'True'),
        ({'slot_exp': 0}, ValueError, '0'),
        ({'slot_exp': -1.5}, ValueError, '-1.5'),
        ({'slot_exp': float('inf')}, ValueError, 'inf'),
        ({'slot_exp': float('nan')}, ValueError, 'nan'),
        ({'slot_exp': '10'}, TypeError, "'10'"),
        ({'key': ''}, ValueError, 'empty'),
        ({'key': 42}, TypeError, '42'),
        ({'key': None}, TypeError, 'None'),
    ],
)
def test_bad_arguments_raise_naming_the_value(
    dead_redis: Cachify, kwargs: dict[str, Any], error: type[Exception], named: str
) -> None:
    args = {'key': 'k', 'max_size': 1, **kwargs}
    for make in (pool, dead_redis.pool, pooled, dead_redis.pooled):
        with pytest.raises(error, match=named):
            make(**args)


def test_bad_default_slot_expiration_is_refused() -> None:
    with pytest.raises(ValueError, match='default_pool_slot_expiration'):
        init_cachify(default_pool_slot_expiration=0, is_global=False)


def test_key_template_naming_a_missing_argument_fails_at_decoration(dead_redis: Cachify) -> None:
    with pytest.raises(ValueError, match=r"'user-\{uid\}'.*\{uid\}.*user_id"):

        @dead_redis.pooled(key='user-{uid}', max_size=1)
        def work(user_id: int) -> None: ...

    with pytest.raises(ValueError, match=r'\{0\}'):

        @dead_redis.pooled(key='item-{0}', max_size=1)
        def positional(item: int) -> None: ...

    with pytest.raises(ValueError, match='not a valid format string'):

        @dead_redis.pooled(key='broken-{', max_size=1)
        def broken() -> None: ...


def test_a_call_that_does_not_fit_the_signature_fails_before_redis(dead_redis: Cachify) -> None:
    @dead_redis.pooled(key='user-{user_id}', max_size=1)
    def work(user_id: int) -> None: ...

    with pytest.raises(TypeError, match='user_id'):
        work()  # type: ignore[call-arg]


async def test_connection_refused_is_an_error_not_a_full_pool(dead_redis: Cachify) -> None:
    on_full_calls: list[object] = []
    p = dead_redis.pool('down', max_size=1)

    @dead_redis.pooled(key='down', max_size=1, on_full=on_full_calls.append)
    def work(x: int) -> None: ...

    @dead_redis.pooled(key='down', max_size=1, on_full=on_full_calls.append)
    async def awork(x: int) -> None: ...

    for attempt in (p.__enter__, p.size, lambda: work(1)):
        with pytest.raises(CachifyBackendError, match="'down(-pool)?'.*ConnectionError") as info:
            attempt()
        assert not isinstance(info.value, CachifyPoolFullError)
        assert isinstance(info.value, redis.RedisError)
        assert isinstance(info.value.__cause__, redis.ConnectionError)
    for aattempt in (p.__aenter__, p.asize, lambda: awork(1)):
        with pytest.raises(CachifyBackendError, match='ConnectionError'):
            await aattempt()
    assert on_full_calls == []


async def test_wrongtype_is_an_error_naming_the_pool(redis_client: redis.Redis, redis_url: str) -> None:
    cachify = init_cachify(redis_client, prefix='wrongtype-', is_global=False)
    redis_client.set('{wrongtype-k}:slots', 'not a sorted set')
    try:
        with pytest.raises(CachifyBackendError, match="'k'.*WRONGTYPE"), cachify.pool('k', max_size=1):
            pass
    finally:
        redis_client.delete('{wrongtype-k}:slots')


async def test_timeout_is_an_error_not_a_full_pool(redis_client: redis.Redis, redis_url: str) -> None:
    slow = redis.asyncio.Redis.from_url(redis_url, socket_timeout=0.1)
    cachify = init_cachify(async_client=slow, prefix='timeout-', is_global=False)
    redis_client.execute_command('CLIENT', 'PAUSE', 600, 'ALL')
    try:
        with pytest.raises(CachifyBackendError, match='Timeout'):
            async with cachify.pool('k', max_size=1):
                pass
    finally:
        redis_client.execute_command('CLIENT', 'UNPAUSE')  # not a sleep until the pause ends
        await slow.aclose()


def test_sync_use_without_a_sync_client_says_so(redis_url: str) -> None:
    cachify = init_cachify(async_client=redis.asyncio.Redis.from_url(redis_url), is_global=False)
    with pytest.raises(CachifyInitError, match='no sync_client'), cachify.pool('k', max_size=1):
        pass


@pytest.mark.usefixtures('no_global')
async def test_global_api_before_init_cachify_raises_init_error() -> None:
    p = pool('early', max_size=1)  # creating is fine: the client is looked up at use

    @pooled(key='early', max_size=1)
    def work() -> None: ...

    for attempt in (p.__enter__, p.size, work):
        with pytest.raises(CachifyInitError, match='init_cachify'):
            attempt()
    with pytest.raises(CachifyInitError):
        await p.asize()


def test_exiting_more_than_entering_is_a_bug_report() -> None:
    p = init_cachify(is_global=False).pool('k', max_size=1)
    with pytest.raises(RuntimeError, match='not held here'):
        p.__exit__(None, None, None)


def test_the_lua_scripts_refuse_a_server_clock_that_reads_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    # fakeredis answers TIME from this process's clock: set it to 0 to play a broken server.
    p = init_cachify(fakeredis.FakeRedis(), is_global=False).pool('k', max_size=1)
    monkeypatch.setattr('time.time', lambda: 0.0)
    for attempt in (p.__enter__, p.size, p.holders, p.purge):
        with pytest.raises(CachifyBackendError, match='clock'):
            attempt()


class _User:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f'User({self.name!r})'


def test_a_key_field_the_argument_cannot_give_names_the_template_and_the_argument(dead_redis: Cachify) -> None:
    @dead_redis.pooled(key='user-{user.nope}', max_size=1)
    def work(user: _User) -> None: ...

    @dead_redis.pooled(key='first-{items[0]}', max_size=1)
    def first(items: int) -> None: ...

    with pytest.raises(ValueError, match=r"'user-\{user\.nope\}'.*\{user\.nope\}.*user=User\('ada'\).*nope") as info:
        work(_User('ada'))
    assert not isinstance(info.value, AttributeError)
    with pytest.raises(ValueError, match=r"'first-\{items\[0\]\}'.*items=7.*subscriptable"):
        first(7)


def test_an_async_on_full_for_a_sync_function_is_refused_at_decoration(dead_redis: Cachify) -> None:
    async def busy() -> str:
        return 'busy'

    class Busy:
        async def __call__(self) -> str:
            return 'busy'

    for on_full in (busy, Busy()):
        with pytest.raises(TypeError, match=r'on_full=.*is async, but .*work is sync'):

            @dead_redis.pooled(key='k', max_size=1, on_full=on_full)
            def work() -> None: ...


def test_pool_full_error_takes_a_message_alone_as_3_1_0_allows() -> None:
    import pickle

    alone = CachifyPoolFullError('too busy right now')
    assert str(alone) == 'too busy right now'
    assert (alone.key, alone.max_size) == (None, None)
    named = CachifyPoolFullError('jobs', 3)
    assert str(named) == "pool 'jobs' is full (max_size=3)"
    assert (named.key, named.max_size) == ('jobs', 3)
    for error in (alone, named):
        copy = pickle.loads(pickle.dumps(error))
        assert (str(copy), copy.key, copy.max_size) == (str(error), error.key, error.max_size)


@pytest.mark.parametrize(
    ('kwargs', 'named'),
    [
        ({'sync_client': 'redis://localhost'}, r"sync_client must be a redis-py client.*'redis://localhost'"),
        ({'async_client': object()}, r'async_client must be a redis-py client.*object'),
        (
            {'sync_client': redis.asyncio.Redis(port=1)},
            r'sync_client must be .*redis\.asyncio\.client\.Redis.*async_client',
        ),
        ({'async_client': redis.Redis(port=1)}, r'async_client must be .*redis\.client\.Redis.*sync_client'),
        (
            {'sync_client': redis.Redis(port=1), 'async_client': redis.Redis(port=1)},
            r'async_client must be .*belongs in sync_client',
        ),
    ],
    ids=['string', 'object', 'async-as-sync', 'sync-as-async', 'both-sync'],
)
def test_a_client_of_the_wrong_kind_fails_at_init_cachify_naming_the_argument(
    kwargs: dict[str, Any], named: str
) -> None:
    with pytest.raises(TypeError, match=named):
        init_cachify(**kwargs, is_global=False)


async def test_fakeredis_and_cluster_clients_are_accepted(cluster_url: str) -> None:
    import redis.asyncio.cluster
    import redis.cluster

    sync_cluster = redis.cluster.RedisCluster.from_url(cluster_url)
    async_cluster = redis.asyncio.cluster.RedisCluster.from_url(cluster_url)
    server = fakeredis.FakeServer()
    fake, afake = fakeredis.FakeRedis(server=server), fakeredis.FakeAsyncRedis(server=server)
    try:
        for clients in ((sync_cluster, async_cluster), (fake, afake)):
            p = init_cachify(*clients, is_global=False).pool('accepted', max_size=1)
            with p:
                assert await p.asize() == 1
    finally:
        sync_cluster.close()
        await async_cluster.aclose()
        fake.close()
        await afake.aclose()
