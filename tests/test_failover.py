"""Failover with the real things: Sentinel and Cluster masters SIGKILLed (or failed over) under load.

Workers (threads on a sync client, tasks on an asyncio-only client, and for the cluster a
second process) loop entering and leaving one waiting pool while its master dies. They
count holders themselves, independently of the pool: never more than `max_size`. Every
error a worker sees must be a `CachifyBackendError` (never a raw redis-py error, never
"full": the pool waits without a timeout). After the failover the same pool objects work
again, and waiters are woken by pub/sub again. The figures (recovery time, wake-up
latency) are printed; run with `-s` to see them.

Also here: sharded pub/sub on a Redis >= 7 Cluster (SPUBLISH / SSUBSCRIBE, one listener
connection per node), and the durability option (`replicas=N`: EVALSHA + WAIT) against a
replica that is really frozen (SIGSTOP).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import multiprocessing
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel

from py_cachify import Cachify, CachifyBackendError, CachifyInitError, init_cachify
from py_cachify.ops import pool_keys

from .redis_server import RedisCluster, RedisSentinel, RedisServer, find_redis_server_7
from .test_wakeups import PUBSUB_SPEED, channel_of, hand_over, pubsub_p50, until, until_pubsub_speed
from .waiting import await_until, wait_until

pytestmark = pytest.mark.slow

MAX_SIZE = 2
HOLD = 0.005  # seconds each worker holds its slot
# Timeouts on the clients, so a call to a dead master fails instead of hanging.
CLIENT_OPTIONS: dict[str, Any] = {'socket_timeout': 1.0, 'socket_connect_timeout': 1.0}


@dataclass
class Load:
    """Workers looping `with pool:`; what they saw, counted outside the pool.

    `shared` counts holders across processes: (holding, peak) in shared memory.
    """

    holding: int = 0
    peak: int = 0
    shared: tuple[Any, Any] | None = None
    entries: list[tuple[float, float]] = field(default_factory=list)  # (try started, entered)
    backend_errors: int = 0
    wrong: list[BaseException] = field(default_factory=list)  # anything but CachifyBackendError
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def entered(self, started: float) -> None:
        with self.lock:
            self.holding += 1
            self.peak = max(self.peak, self.holding)
            self.entries.append((started, time.monotonic()))
        if self.shared is not None:
            holding, peak = self.shared
            with holding.get_lock():
                holding.value += 1
                peak.value = max(peak.value, holding.value)

    def leaving(self) -> None:
        if self.shared is not None:
            with self.shared[0].get_lock():
                self.shared[0].value -= 1
        with self.lock:
            self.holding -= 1

    def failed(self, exc: BaseException) -> None:
        with self.lock:
            if isinstance(exc, CachifyBackendError):
                self.backend_errors += 1
            else:
                self.wrong.append(exc)

    def first_entry_after(self, moment: float) -> float:
        """Seconds from `moment` to the first entry whose try began after it."""
        with self.lock:
            return min(entered for started, entered in self.entries if started > moment) - moment

    def longest_gap(self, since: float) -> float:
        """The longest time without any entry, from `since` on: what the failover cost the load."""
        with self.lock:
            times = sorted([since, *(entered for _, entered in self.entries if entered > since)])
        return max(b - a for a, b in itertools.pairwise(times))

    def entries_after(self, moment: float) -> int:
        with self.lock:
            return sum(1 for started, _ in self.entries if started > moment)

    def thread_worker(self, cachify: Cachify, key: str) -> None:
        pool = cachify.pool(key, max_size=MAX_SIZE, slot_exp=5, nowait=False)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                with pool:
                    self.entered(started)
                    try:
                        time.sleep(HOLD)
                    finally:
                        self.leaving()
            except Exception as exc:
                self.failed(exc)
                time.sleep(0.01)

    async def task_worker(self, cachify: Cachify, key: str) -> None:
        pool = cachify.pool(key, max_size=MAX_SIZE, slot_exp=5, nowait=False)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                async with pool:
                    self.entered(started)
                    try:
                        await asyncio.sleep(HOLD)
                    finally:
                        self.leaving()
            except Exception as exc:
                self.failed(exc)
                await asyncio.sleep(0.01)


class Running:
    """A load's threads and tasks, stopped and joined whatever happens."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.threads: list[threading.Thread] = []
        self.tasks: list[asyncio.Task[None]] = []

    def thread(self, cachify: Cachify, key: str) -> None:
        thread = threading.Thread(target=self.load.thread_worker, args=(cachify, key), daemon=True)
        thread.start()
        self.threads.append(thread)

    def task(self, cachify: Cachify, key: str) -> None:
        self.tasks.append(asyncio.ensure_future(self.load.task_worker(cachify, key)))

    async def stop(self) -> None:
        """Stop the workers; waiting ones are woken by the others' last releases or their poll."""
        self.load.stop.set()
        if self.tasks:
            done, pending = await asyncio.wait(self.tasks, timeout=30)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
            for task in done:
                task.result()
        for thread in self.threads:
            await asyncio.to_thread(thread.join, 30)
        assert not any(t.is_alive() for t in self.threads), 'a worker thread did not stop'


async def run_through(load: Load, kill: Callable[[], object]) -> float:
    """Let the load run, then `kill` (off the loop); returns when, once the pool works again."""
    await until(lambda: len(load.entries) >= 20, what='the load got going')
    await asyncio.to_thread(kill)
    killed = time.monotonic()  # once the process is gone: nothing after this reached it
    # The same pool objects work again, for every kind of worker.
    await until(lambda: load.entries_after(killed) >= 20, timeout=60, what='the pool worked again after failover')
    return killed


def check(load: Load) -> None:
    assert not load.wrong, f'errors other than CachifyBackendError: {load.wrong[:5]!r}'
    assert load.peak <= MAX_SIZE, f'{load.peak} holders at once, max_size={MAX_SIZE}'
    assert load.holding == 0


# -- Sentinel ---------------------------------------------------------------------------------


@pytest.fixture
async def sentinel() -> AsyncIterator[RedisSentinel]:
    with RedisSentinel(replicas=1, down_after_ms=1000) as deployment:
        yield deployment


async def test_a_sentinel_failover_under_load(sentinel: RedisSentinel) -> None:
    sync_sentinel = redis.sentinel.Sentinel(sentinel.sentinel_addresses, **CLIENT_OPTIONS)
    sync_master = sync_sentinel.master_for(sentinel.service, **CLIENT_OPTIONS)
    async_sentinel = redis.asyncio.sentinel.Sentinel(sentinel.sentinel_addresses, **CLIENT_OPTIONS)
    async_master = async_sentinel.master_for(sentinel.service, **CLIENT_OPTIONS)
    # redis-py reorders `Sentinel.sentinels` as it finds the master, and concurrent lookups can
    # drop a client from that list (seen with 8.1): close the clients it started with.
    sentinel_clients = [*sync_sentinel.sentinels, *async_sentinel.sentinels]
    # A listener thread (sync client) and a listener task (asyncio client only), on one pool.
    threaded = init_cachify(sync_master, async_master, prefix='sentinel-', is_global=False)
    tasked = init_cachify(None, async_master, prefix='sentinel-', is_global=False)
    load = Load()
    running = Running(load)
    try:
        for _ in range(3):
            running.thread(threaded, 'load')
            running.task(tasked, 'load')
        killed = await run_through(load, sentinel.kill_master)
        failed_over = await asyncio.to_thread(sentinel.wait_for_failover, sentinel.master)
        await running.stop()
        check(load)
        assert failed_over is sentinel.replicas[0]
        recovery, gap = load.first_entry_after(killed), load.longest_gap(killed - 1)
        wakeups = {}
        for kind, cachify in (('thread', threaded), ('task', tasked)):
            await until_pubsub_speed(cachify, 'after', kind, deadline=30)
            wakeups[kind] = await pubsub_p50(cachify, 'after', kind)
            assert wakeups[kind] < PUBSUB_SPEED
        print(
            f'\nSentinel failover under load: first acquire {recovery:.3f} s after the SIGKILL, longest time '
            f'without one {gap:.3f} s ({load.backend_errors} CachifyBackendErrors, peak {load.peak}/{MAX_SIZE}); '
            f'wake-up p50 after it: thread {wakeups["thread"] * 1000:.1f} ms, task {wakeups["task"] * 1000:.1f} ms'
        )
    finally:
        await running.stop()
        await threaded.aclose()
        await tasked.aclose()
        sync_master.close()
        await async_master.aclose()
        for client in sentinel_clients:
            await client.aclose() if isinstance(client, redis.asyncio.Redis) else client.close()


# -- Cluster ----------------------------------------------------------------------------------

# Sharded pub/sub is exercised when a Redis >= 7 is there; else plain pub/sub on the default binary.
REDIS_7 = find_redis_server_7()


def _child_load(url: str, shared: tuple[Any, Any], stop: Any, report: Any) -> None:
    """In another process: thread workers on the same pool until told to stop; then a wake-up check."""
    sync_client = redis.cluster.RedisCluster.from_url(url, **CLIENT_OPTIONS)
    async_client = redis.asyncio.cluster.RedisCluster.from_url(url, **CLIENT_OPTIONS)
    cachify = init_cachify(sync_client, async_client, prefix='cluster-', is_global=False)
    load = Load(shared=shared)
    threads = [threading.Thread(target=load.thread_worker, args=(cachify, 'load')) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        stop.wait(120)
        load.stop.set()
        for thread in threads:
            thread.join(30)

        async def woken() -> float:
            try:
                await until_pubsub_speed(cachify, 'child-after', 'thread', deadline=30)
                latency = await pubsub_p50(cachify, 'child-after', 'thread')
                # Acquires that failed in transit are given back in the background: let them land.
                await until(lambda: cachify.settings.backend.give_backs.pending() == 0, what='give-backs landed')
                return latency
            finally:
                await cachify.aclose()
                await async_client.aclose()

        latency = asyncio.run(woken())
        report.put((len(load.entries), load.backend_errors, [repr(e) for e in load.wrong], latency))
    except BaseException as exc:
        report.put((0, 0, [repr(exc)], None))
    finally:
        load.stop.set()
        cachify.close()
        sync_client.close()


@pytest.mark.parametrize('how', ['SIGKILL', 'CLUSTER FAILOVER'])
async def test_a_cluster_failover_under_load(how: str) -> None:
    context = multiprocessing.get_context('spawn')
    shared = (context.Value('i', 0), context.Value('i', 0))
    stop, report = context.Event(), context.Queue()
    with RedisCluster(replicas=1, node_timeout_ms=1000, binary=REDIS_7) as cluster:
        sync_client = redis.cluster.RedisCluster.from_url(cluster.url, **CLIENT_OPTIONS)
        async_client = redis.asyncio.cluster.RedisCluster.from_url(cluster.url, **CLIENT_OPTIONS)
        threaded = init_cachify(sync_client, async_client, prefix='cluster-', is_global=False)
        tasked = init_cachify(None, async_client, prefix='cluster-', is_global=False)
        load = Load(shared=shared)
        running = Running(load)
        child = context.Process(target=_child_load, args=(cluster.url, shared, stop, report), daemon=True)
        try:
            child.start()
            for _ in range(2):
                running.thread(threaded, 'load')
                running.task(tasked, 'load')
            master = cluster.master_of(pool_keys('cluster-load').slots)
            replica = next(g for m, g in zip(cluster.masters, cluster.replicas, strict=True) if m is master)[0]

            def fail_over() -> None:
                if how == 'SIGKILL':
                    master.kill()
                else:
                    with redis.Redis(port=replica.port) as node:
                        node.execute_command('CLUSTER', 'FAILOVER')  # type: ignore[no-untyped-call]

            killed = await run_through(load, fail_over)
            await asyncio.to_thread(cluster.wait_for_failover, master)
            await running.stop()
            stop.set()
            entries, errors, wrong, child_latency = await asyncio.to_thread(report.get, True, 90)
            check(load)
            assert not wrong, wrong
            assert entries > 0
            assert shared[1].value <= MAX_SIZE, f'{shared[1].value} holders at once across processes'
            assert child_latency is not None
            assert child_latency < PUBSUB_SPEED
            recovery, gap = load.first_entry_after(killed), load.longest_gap(killed - 1)
            for cachify in (threaded, tasked):
                await until(lambda c=cachify: c.settings.backend.give_backs.pending() == 0, what='give-backs landed')
            wakeups = {}
            for kind, cachify in (('thread', threaded), ('task', tasked)):
                # A pool first waited on after the failover: its channel may be on a node the
                # listener had no connection to yet.
                took, _ = await until_pubsub_speed(cachify, 'after', kind, deadline=30)
                assert took < 10, f'{kind}: wake-ups back only {took:.1f} s after the failover'
                wakeups[kind] = await pubsub_p50(cachify, 'after', kind)
                assert wakeups[kind] < PUBSUB_SPEED
            print(
                f'\ncluster {how} under load ({"sharded" if threaded.settings.backend.sharded() else "plain"} '
                f'pub/sub): first acquire {recovery:.3f} s after it began, longest time without one {gap:.3f} s '
                f'({load.backend_errors} + {errors} CachifyBackendErrors, peak {shared[1].value}/{MAX_SIZE} across '
                '2 processes); wake-up p50 after it: '
                f'thread {wakeups["thread"] * 1000:.1f} ms, task {wakeups["task"] * 1000:.1f} ms, '
                f'other process {child_latency * 1000:.1f} ms'
            )
        finally:
            stop.set()
            await running.stop()
            child.join(60)
            if child.is_alive():
                child.kill()
                child.join()
            report.close()
            report.join_thread()
            await threaded.aclose()
            await tasked.aclose()
            sync_client.close()
            await async_client.aclose()


# -- sharded pub/sub on a Redis >= 7 Cluster ------------------------------------------------

needs_redis_7 = pytest.mark.skipif(
    REDIS_7 is None, reason='sharded pub/sub needs a redis-server >= 7 (none on PATH, in /usr/bin or $REDIS_SERVER_7)'
)


def cluster_clients(url: str, kind: str) -> tuple[Any, Any]:
    sync_client = redis.cluster.RedisCluster.from_url(url, **CLIENT_OPTIONS) if kind == 'thread' else None
    return sync_client, redis.asyncio.cluster.RedisCluster.from_url(url, **CLIENT_OPTIONS)


async def close_all(cachify: Cachify, sync_client: Any, async_client: Any) -> None:
    await cachify.aclose()
    if sync_client is not None:
        sync_client.close()
    await async_client.aclose()


@needs_redis_7
@pytest.mark.parametrize('kind', ['thread', 'task'])
async def test_on_redis_7_a_cluster_wakes_waiters_by_sharded_pub_sub(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only a message wakes a waiter in time: a channel whose node nobody reads would time out.
    monkeypatch.setattr(sys.modules['py_cachify.pool'], 'FALLBACK_POLL', 60.0)
    with RedisCluster(binary=REDIS_7) as cluster:
        sync_client, async_client = cluster_clients(cluster.url, kind)
        cachify = init_cachify(sync_client, async_client, prefix='sharded-', is_global=False)
        try:
            # Pools on every master: each channel goes on a connection to its own shard.
            keys = [f'key{i}' for i in range(12)]
            owners = {cluster.master_of(channel_of(cachify, key)).port for key in keys}
            assert len(owners) == 3
            latencies = [await hand_over(cachify, key, kind) for key in keys]
            assert max(latencies) < 2.0, latencies  # every one woken by its message, none by a poll
            assert statistics.median(latencies) < PUBSUB_SPEED
            for key in keys:
                channel = channel_of(cachify, key)
                owner = cluster.master_of(channel)
                for node in cluster.masters:
                    with redis.Redis(port=node.port) as admin:
                        sharded = {_text(c) for c in admin.execute_command('PUBSUB', 'SHARDCHANNELS')}  # type: ignore[no-untyped-call]
                        plain = {_text(c) for c in admin.pubsub_channels()}
                    assert (channel in sharded) == (node is owner), (key, node.port, owner.port)
                    assert channel not in plain
            print(f'\nsharded pub/sub ({kind}): hand-over p50 {statistics.median(latencies) * 1000:.1f} ms')
        finally:
            await close_all(cachify, sync_client, async_client)


@needs_redis_7
async def test_a_cluster_user_without_info_gets_plain_pub_sub_not_errors() -> None:
    with RedisCluster(binary=REDIS_7) as cluster:
        for node in cluster.masters:
            with redis.Redis(port=node.port) as admin:
                admin.execute_command('ACL', 'SETUSER', 'app', 'on', 'nopass', '~*', '&*', '+@all', '-info')  # type: ignore[no-untyped-call]
        url = f'redis://app:any@127.0.0.1:{cluster.masters[0].port}/0'
        sync_client, async_client = cluster_clients(url, 'task')
        cachify = init_cachify(sync_client, async_client, prefix='noinfo-', is_global=False)
        try:
            # The version cannot be asked: pools work, and waiters are woken by plain PUBLISH.
            assert await pubsub_p50(cachify, 'k', 'task') < PUBSUB_SPEED
            assert not cachify.settings.backend.sharded()
        finally:
            await close_all(cachify, sync_client, async_client)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- durability: an acquire confirmed on replicas --------------------------------------------


class Replicated:
    """A master with one replica (a standalone pair, or a 3-master cluster with a replica each)."""

    def __init__(self, layout: str) -> None:
        self.layout = layout
        self.cluster = RedisCluster(replicas=1, node_timeout_ms=5000) if layout == 'cluster' else None
        self.master = RedisServer() if layout != 'cluster' else None
        self.replica: RedisServer | None = None

    def __enter__(self) -> Replicated:
        if self.cluster is not None:
            self.cluster.start()
            return self
        assert self.master is not None
        self.master.start()
        self.replica = RedisServer('--replicaof', '127.0.0.1', str(self.master.port)).start()
        wait_until(lambda: _role(self.replica).get('master_link_status') == 'up', what='the replica synced')  # type: ignore[arg-type]
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.servers():
            if server.process is not None:
                os.kill(server.process.pid, signal.SIGCONT)  # never leave one frozen for the teardown
        if self.cluster is not None:
            self.cluster.stop()
        else:
            for server in (self.replica, self.master):
                if server is not None:
                    server.__exit__()

    def servers(self) -> list[RedisServer]:
        return self.cluster.servers if self.cluster is not None else [s for s in (self.master, self.replica) if s]

    def cachify(self) -> tuple[Cachify, Any, Any]:
        if self.cluster is not None:
            sync_client: Any = redis.cluster.RedisCluster.from_url(self.cluster.url)
            async_client: Any = redis.asyncio.cluster.RedisCluster.from_url(self.cluster.url)
        else:
            assert self.master is not None
            sync_client = redis.Redis(port=self.master.port)
            async_client = redis.asyncio.Redis(port=self.master.port)
        return init_cachify(sync_client, async_client, prefix='durable-', is_global=False), sync_client, async_client

    def replica_of(self, key: str) -> RedisServer:
        """The replica of the master that serves pool `key`."""
        if self.cluster is None:
            assert self.replica is not None
            return self.replica
        master = self.cluster.master_of(pool_keys('durable-' + key).slots)
        return next(g for m, g in zip(self.cluster.masters, self.cluster.replicas, strict=True) if m is master)[0]


def _role(server: RedisServer) -> dict[str, Any]:
    with redis.Redis(port=server.port) as client:
        return dict(client.info('replication'))


@pytest.fixture(scope='module', params=['standalone', 'cluster'])
def deployment(request: pytest.FixtureRequest) -> Iterator[Replicated]:
    """Shared by this module's durability tests: each leaves its replica running again."""
    with Replicated(str(request.param)) as replicated:
        yield replicated


@pytest.fixture
async def replicated(deployment: Replicated) -> AsyncIterator[tuple[Replicated, Cachify]]:
    cachify, sync_client, async_client = deployment.cachify()
    try:
        yield deployment, cachify
    finally:
        await close_all(cachify, sync_client, async_client)


@pytest.mark.parametrize('api', ['sync', 'async'])
async def test_a_durable_acquire_is_on_the_replica_before_the_body_runs(
    replicated: tuple[Replicated, Cachify], api: str
) -> None:
    deployment, cachify = replicated
    pool = cachify.pool('held', max_size=1, replicas=1, replica_timeout=5)
    replica = deployment.replica_of('held')
    for _ in range(20):
        lease = await asyncio.to_thread(pool.acquire) if api == 'sync' else await pool.aacquire()
        try:
            with redis.Redis(port=replica.port) as on_replica:
                if deployment.cluster is not None:
                    on_replica.execute_command('READONLY')  # type: ignore[no-untyped-call]
                assert on_replica.zscore(pool_keys('durable-held').slots, lease.slot) is not None
        finally:
            await lease.arelease()


@pytest.mark.parametrize('api', ['sync', 'async'])
async def test_a_durable_acquire_that_no_replica_confirms_is_given_back_and_raises(
    replicated: tuple[Replicated, Cachify], api: str
) -> None:
    deployment, cachify = replicated
    pool = cachify.pool('frozen', max_size=1, replicas=1, replica_timeout=0.2)
    replica = deployment.replica_of('frozen')
    assert replica.process is not None
    os.kill(replica.process.pid, signal.SIGSTOP)  # the replica stops acknowledging, for real
    try:
        with pytest.raises(CachifyBackendError, match=r'reached 0 of the 1 replica\(s\).*replicas=1') as raised:
            await asyncio.to_thread(pool.acquire) if api == 'sync' else await pool.aacquire()
        assert raised.value.key == 'frozen'
        assert await pool.asize() == 0  # given back: nobody holds it
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
    # The replica is back: the same pool works again.
    await await_until(lambda: deployment_acquires(pool), what='a durable acquire once the replica is back')


async def deployment_acquires(pool: Any) -> bool:
    try:
        lease = await pool.aacquire()
    except CachifyBackendError:
        return False
    await lease.arelease()
    return True


def test_durability_arguments_are_checked_when_the_pool_is_made() -> None:
    cachify = init_cachify(is_global=False)  # no Redis needed: nothing is sent
    for bad, error in [('1', TypeError), (True, TypeError), (-1, ValueError), (1.5, TypeError)]:
        with pytest.raises(error, match='replicas'):
            cachify.pool('k', 1, replicas=bad)
    for bad_timeout, error in [
        (0, ValueError),
        (-1, ValueError),
        (math.inf, ValueError),
        ('1', TypeError),
        (61, ValueError),
    ]:
        with pytest.raises(error, match='replica_timeout'):
            cachify.pool('k', 1, replicas=1, replica_timeout=bad_timeout)
    with pytest.raises(ValueError, match='replica_timeout'):
        cachify.pooled('k', 1, replicas=1, replica_timeout=0)


async def test_the_embedded_store_refuses_durability_clearly() -> None:
    cachify = init_cachify(is_global=False)
    with pytest.raises(CachifyInitError, match='replicas=1'):
        cachify.pool('k', 1, replicas=1).acquire()
    with pytest.raises(CachifyInitError, match='no replicas'):
        await cachify.pool('k', 1, replicas=1).aacquire()


def test_the_durability_benchmark_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import durability

    out = tmp_path / 'durability.json'
    assert durability.main(['--cycles', '20', '--rounds', '1', '--json', str(out)]) == 0
    medians = json.loads(out.read_text())['medians']
    assert all(figures['cycles_per_s'] > 0 for by in medians.values() for figures in by.values())
    assert '| sync | replicas=1 |' in capsys.readouterr().out
