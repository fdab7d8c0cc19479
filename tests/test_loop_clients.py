"""One module-level asyncio client, many event loops: each loop gets connections of its own.

redis-py binds an asyncio client's connections to the loop that opened them. These tests
drive the transitions of `backends.loops.LoopClients` for real: `asyncio.run()` after
`asyncio.run()`, loops in threads at once, a fork, `close()` from another thread, and a
client that cannot be cloned used by two live loops. Connections are counted in CLIENT LIST
by the client name they carry.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster

from py_cachify import Cachify, CachifyBackendError
from py_cachify.backends.loops import Home, LoopClients
from py_cachify.backends.redis import RedisBackend

from .redis_server import RedisSentinel
from .waiting import wait_until

MAX = 2


class Setup:
    """An async-only Cachify on a named asyncio client, and a sync client to look with."""

    def __init__(self, kind: str, url: str, sentinel: RedisSentinel | None = None) -> None:
        self.name = f'pyc-loops-{uuid.uuid4().hex[:8]}'
        named = f'{url}?client_name={self.name}'
        if sentinel is not None:  # `url` is the master's
            sentinels: Any = redis.asyncio.sentinel.Sentinel(sentinel.sentinel_addresses)
            self.client = sentinels.master_for(sentinel.service, client_name=self.name)
            self.looker = redis.Redis.from_url(url)
        elif kind == 'cluster':
            self.client: Any = redis.asyncio.cluster.RedisCluster.from_url(named)
            self.looker: Any = redis.cluster.RedisCluster.from_url(url)
        else:
            self.client = redis.asyncio.Redis.from_url(named)
            self.looker = redis.Redis.from_url(url)
        self.cachify = Cachify(async_client=self.client, prefix=f'{self.name}-')
        self.peak = 0
        self.now = 0
        self._lock = threading.Lock()

        @self.cachify.pooled('work', MAX, nowait=False, timeout=30)
        async def work(i: int) -> int:
            with self._lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            try:
                await asyncio.sleep(0.02)
            finally:
                with self._lock:
                    self.now -= 1
            return i

        self.work = work

    @property
    def loops(self) -> LoopClients:
        backend = self.cachify.settings.backend
        assert isinstance(backend, RedisBackend)
        assert backend.loop_clients is not None
        return backend.loop_clients

    def connections(self) -> list[dict[str, Any]]:
        """This client's connections (its clones' included), on every node."""
        if isinstance(self.looker, redis.cluster.RedisCluster):
            per_node = self.looker.client_list(target_nodes=redis.cluster.RedisCluster.ALL_NODES)
            clients = [c for node in per_node.values() for c in node] if isinstance(per_node, dict) else per_node
        else:
            clients = self.looker.client_list()
        return [c for c in clients if c.get('name') == self.name]

    def no_connection_left(self) -> None:
        wait_until(lambda: not self.connections(), what=f'connections left open: {self.connections()}')


@pytest.fixture(scope='module')
def sentinel() -> Iterator[RedisSentinel]:
    with RedisSentinel() as started:
        yield started


@pytest.fixture(params=['redis', 'cluster', 'sentinel'])
def setup(request: pytest.FixtureRequest) -> Iterator[Setup]:
    if request.param == 'sentinel':
        started: RedisSentinel = request.getfixturevalue('sentinel')
        made = Setup('sentinel', started.master.url, started)
    else:
        made = Setup(request.param, request.getfixturevalue(f'{request.param}_url'))
    try:
        yield made
    finally:
        made.cachify.close()
        asyncio.run(made.client.aclose())
        made.looker.close()


def test_asyncio_run_after_asyncio_run_works_and_leaves_no_connection(setup: Setup) -> None:
    assert [asyncio.run(setup.work(i)) for i in range(5)] == list(range(5))
    # The configured client served the first loop, and was let go when that loop shut down.
    assert setup.loops.home is Home.RETIRED
    setup.no_connection_left()


def test_loops_in_threads_at_once_each_get_their_own_client(setup: Setup) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results.append(asyncio.run(setup.work(i)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
    finally:
        for thread in threads:
            thread.join(60)
    assert not errors
    assert sorted(results) == list(range(8))
    assert setup.peak <= MAX
    setup.no_connection_left()


def test_a_forked_child_uses_connections_of_its_own(setup: Setup) -> None:
    # The parent's loop is the configured client's home, with a connection open at the fork.
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(setup.work(0)) == 0
        assert setup.loops.home is Home.HOME
        pid = os.fork()
        if pid == 0:  # the child: its own loops, never the parent's sockets
            code = 1
            try:
                code = 0 if [asyncio.run(setup.work(i)) for i in range(3)] == [0, 1, 2] else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent's connection was not disturbed by the child.
        assert loop.run_until_complete(setup.work(1)) == 1
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    setup.no_connection_left()


def test_close_from_another_thread_closes_a_running_loops_client(setup: Setup) -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        assert asyncio.run(setup.work(0)) == 0  # takes the configured client, and retires it
        assert asyncio.run_coroutine_threadsafe(setup.work(1), loop).result(30) == 1  # a clone
        assert setup.connections()
        setup.loops.close()
        setup.no_connection_left()
        # The pool keeps working in that loop, on a new clone.
        assert asyncio.run_coroutine_threadsafe(setup.work(2), loop).result(30) == 2
    finally:
        asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
    setup.no_connection_left()


class _OwnPool(redis.asyncio.ConnectionPool):
    """A pool class we do not know how to clone: its client passes from loop to loop."""


# A loop closed by hand leaves its sockets to the garbage collector, which warns: collected
# inside these tests, where that warning is expected.
_DEAD_LOOP_WARNINGS = [
    pytest.mark.filterwarnings('ignore::ResourceWarning'),
    pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning'),
]


@_DEAD_LOOP_WARNINGS[0]
@_DEAD_LOOP_WARNINGS[1]
def test_a_client_of_a_dead_loop_fails_as_a_backend_error_then_recovers(redis_url: str) -> None:
    client = redis.asyncio.Redis(connection_pool=_OwnPool.from_url(redis_url))
    cachify = Cachify(async_client=client, prefix=f'own-{uuid.uuid4().hex[:8]}-')
    p = cachify.pool('shared', MAX)
    try:
        # A loop closed without shutting down its async generators (not what asyncio.run()
        # does): its connection stays in the client's pool, bound to a closed loop.
        loop = asyncio.new_event_loop()
        assert loop.run_until_complete(p.asize()) == 0
        loop.close()
        # redis-py raises RuntimeError('Event loop is closed') on it: callers see ours.
        with pytest.raises(CachifyBackendError) as info:
            asyncio.run(p.asize())
        assert isinstance(info.value.__cause__, RuntimeError)
        # That loop's shutdown let go of the client's connections: the next loop works.
        assert asyncio.run(p.asize()) == 0
    finally:
        cachify.close()
        asyncio.run(client.aclose())
        gc.collect()


@_DEAD_LOOP_WARNINGS[0]
@_DEAD_LOOP_WARNINGS[1]
def test_a_clonable_client_of_a_dead_loop_is_not_used_again(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    cachify = Cachify(async_client=client, prefix=f'dead-{uuid.uuid4().hex[:8]}-')
    p = cachify.pool('shared', MAX)
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(p.asize()) == 0
        loop.close()  # without shutting down its async generators
        assert [asyncio.run(p.asize()) for _ in range(3)] == [0, 0, 0]  # a clone each, at once
    finally:
        cachify.close()
        # The configured client's connection belongs to the closed loop; drop it unawaited.
        client.connection_pool.reset()
        gc.collect()
