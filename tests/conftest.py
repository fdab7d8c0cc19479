"""Fixtures: a real redis-server of the suite's own, and one contract over every backend."""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from py_cachify import Cachify, init_cachify, pool, settings

from .redis_server import RedisCluster, RedisServer, find_redis_server

BACKENDS = ['memory', 'redis', 'cluster', 'fakeredis']
_prefixes = itertools.count()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which redis-server the suite starts (and which server $REDIS_URL points at)."""
    try:
        binary = find_redis_server()
        version = subprocess.run([binary, '--version'], capture_output=True, text=True, timeout=10).stdout.strip()
        lines = [f'redis-server: {binary} ({version})']
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        lines = [f'redis-server: none found ({exc})']
    if os.environ.get('REDIS_URL'):
        lines.append(f'standalone tests use $REDIS_URL={os.environ["REDIS_URL"]}')
    return [*lines, f'redis-py {redis.__version__}, fakeredis {getattr(fakeredis, "__version__", "?")}']


@pytest.fixture(scope='session')
def redis_url() -> Iterator[str]:
    """$REDIS_URL if set, else a redis-server this session starts on a free port and stops."""
    if os.environ.get('REDIS_URL'):
        yield os.environ['REDIS_URL']
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of this test's own: it may be killed, paused, frozen or locked down."""
    with RedisServer() as own:
        yield own


@pytest.fixture
def admin(server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client of the test's own server, for the test's own checks and faults."""
    client = redis.Redis(port=server.port)
    yield client
    client.close()


@pytest.fixture(scope='session')
def cluster_url() -> Iterator[str]:
    """A three-node Redis Cluster this session starts on free ports and stops."""
    with RedisCluster() as cluster:
        yield cluster.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def aredis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_cachify(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Cachify]]:
    """Makes `Cachify` instances on `backend` (sharing one store), each with a fresh prefix."""
    if backend == 'memory':
        yield lambda **kwargs: init_cachify(**{'prefix': f'test{next(_prefixes)}-', **kwargs}, is_global=False)
        return
    if backend == 'fakeredis':
        server = fakeredis.FakeServer()
        sync_client: Any = fakeredis.FakeRedis(server=server)
        async_client: Any = fakeredis.FakeAsyncRedis(server=server)
    elif backend == 'cluster':
        url = request.getfixturevalue('cluster_url')
        sync_client = redis.cluster.RedisCluster.from_url(url)
        async_client = redis.asyncio.cluster.RedisCluster.from_url(url)
    else:
        url = request.getfixturevalue('redis_url')
        sync_client = redis.Redis.from_url(url)
        async_client = redis.asyncio.Redis.from_url(url)
    yield lambda **kwargs: init_cachify(
        sync_client, async_client, **{'prefix': f'test{next(_prefixes)}-', **kwargs}, is_global=False
    )
    sync_client.close()
    await async_client.aclose()


@pytest.fixture
def cachify(make_cachify: Callable[..., Cachify]) -> Cachify:
    """A Cachify on `backend`, with a prefix no other test uses."""
    return make_cachify()


@pytest.fixture(params=['sync', 'async'])
def api(request: pytest.FixtureRequest) -> Api:
    return Api(str(request.param))


class Api:
    """Drives a pool through its sync or its async API, so one test covers both."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __repr__(self) -> str:
        return self.mode

    async def size(self, p: pool) -> int:
        return p.size() if self.mode == 'sync' else await p.asize()

    @contextlib.asynccontextmanager
    async def hold(self, p: pool) -> AsyncIterator[pool]:
        if self.mode == 'sync':
            with p as held:
                yield held
        else:
            async with p as held:
                yield held


@pytest.fixture
def no_global() -> Iterator[None]:
    """Run a test with py_cachify not initialized, and restore the global after it."""
    saved = settings._global
    settings._global = None
    yield
    settings._global = saved
