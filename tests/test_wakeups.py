"""Wake-ups under real faults: refused SUBSCRIBE, killed connections, failover, fork, outage, close."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import selectors
import socket
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from py_cachify import Cachify, CachifyBackendError, CachifyPoolFullError, init_cachify, notify, subscription
from py_cachify.mailbox import TOKEN_CHARS, mailbox, new_slot_id
from py_cachify.notify import Wakeups
from py_cachify.ops import pool_keys
from py_cachify.subscription import State, Subscriptions

from .redis_server import RedisCluster, RedisServer
from .waiting import from_forked_child

# Pub/sub hand-overs take a millisecond or two; anything this slow was not woken by a message.
PUBSUB_SPEED = 0.1
# `thread`: a sync client is given, one listener thread serves every waiter.
# `task`: only an asyncio client, one listener task per event loop.
KINDS = ['thread', 'task']
_prefixes = iter(range(1_000_000))


@pytest.fixture
def no_fallback_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the safety-net poll too slow to matter: only a message (or expiry) wakes a waiter."""
    monkeypatch.setattr(sys.modules['py_cachify.pool'], 'FALLBACK_POLL', 60.0)


@pytest.fixture
async def make(server: RedisServer) -> AsyncIterator[Callable[..., Cachify]]:
    """Makes a Cachify on the test's server (`kind` picks the subscriber); closes it and its clients."""
    made: list[tuple[Cachify, Any, Any]] = []

    def make(kind: str, url: str | None = None) -> Cachify:
        url = url or server.url
        sync_client = redis.Redis.from_url(url) if kind == 'thread' else None
        async_client = redis.asyncio.Redis.from_url(url)
        cachify = init_cachify(sync_client, async_client, prefix=f'wake{next(_prefixes)}-', is_global=False)
        made.append((cachify, sync_client, async_client))
        return cachify

    yield make
    for cachify, sync_client, async_client in made:
        await cachify.aclose()
        if sync_client is not None:
            sync_client.close()
        await async_client.aclose()


async def until(condition: Callable[[], object], timeout: float = 30.0, what: str = 'the condition') -> None:
    """Poll `condition` (without blocking the loop) until it holds; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f'{what} did not hold within {timeout} s')
        await asyncio.sleep(0.01)


def channel_of(cachify: Cachify, key: str) -> str:
    return pool_keys(cachify.settings.prefix + key).channel


async def hand_over(cachify: Cachify, key: str, kind: str, timeout: float = 10.0) -> float:
    """Seconds from a release to the waiter that was waiting for it holding the slot.

    The waiter is a thread with a sync client (`thread`), else a task. Raises
    `CachifyPoolFullError` if it was never woken within `timeout`.
    """
    holder = cachify.pool(key, max_size=1)
    waiter = cachify.pool(key, max_size=1, nowait=False, timeout=timeout)
    lease = await holder.aacquire()

    def wait_in_thread() -> float:
        with waiter:
            return time.monotonic()

    async def wait_in_task() -> float:
        async with waiter:
            return time.monotonic()

    waiting = asyncio.ensure_future(asyncio.to_thread(wait_in_thread) if kind == 'thread' else wait_in_task())
    try:
        await until(lambda: cachify.settings.backend.wakeups.waiting(channel_of(cachify, key)) or waiting.done())
        await asyncio.sleep(0.05)  # let it get from its last try into its wait
        released = time.monotonic()
        await lease.arelease()
        return await waiting - released
    finally:
        await lease.arelease()
        if not waiting.done():
            waiting.cancel()
        await asyncio.wait({waiting})


async def until_pubsub_speed(cachify: Cachify, key: str, kind: str, deadline: float = 30.0) -> tuple[float, float]:
    """Hand over until one is woken at pub/sub speed; returns (seconds it took, that latency)."""
    started = time.monotonic()
    while True:
        try:
            latency = await hand_over(cachify, key, kind, timeout=2.0)
            if latency < PUBSUB_SPEED:
                return time.monotonic() - started, latency
        except (CachifyPoolFullError, CachifyBackendError):
            pass
        if time.monotonic() - started > deadline:
            raise AssertionError(f'wake-ups did not come back to pub/sub speed within {deadline} s')


async def pubsub_p50(cachify: Cachify, key: str, kind: str, rounds: int = 5) -> float:
    latencies = [await hand_over(cachify, key, kind) for _ in range(rounds)]
    assert max(latencies) < 2.0, latencies
    return statistics.median(latencies)


def wakeup_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == level and 'wake-ups' in r.getMessage()]


@pytest.mark.usefixtures('no_fallback_poll')
@pytest.mark.parametrize('kind', KINDS)
async def test_a_release_naming_a_waiter_reaches_its_process_s_mailbox_only(
    make: Callable[..., Cachify], admin: redis.Redis, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only a message can wake the waiter: its polls are a minute apart.
    monkeypatch.setattr(sys.modules['py_cachify.pool'], 'HEARD_POLL', 60.0)
    cachify = make(kind)
    channel = channel_of(cachify, 'addressed')
    leases = pool_keys(cachify.settings.prefix + 'addressed').leases
    holder = await cachify.pool('addressed', max_size=1).aacquire()
    waiter = cachify.pool('addressed', max_size=1, nowait=False, timeout=30)
    waiting = asyncio.ensure_future(asyncio.to_thread(waiter.acquire) if kind == 'thread' else waiter.aacquire())
    # Another process, as the channel sees it: subscribed to the pool's channel only.
    other = admin.pubsub(ignore_subscribe_messages=True)
    other.subscribe(channel)
    try:
        # The waiter was turned away (it holds a lease), and hears its channel and mailbox.
        await until(lambda: admin.zcard(leases) == 1 and cachify.settings.backend.wakeups.heard(channel))
        assert admin.pubsub_numsub(mailbox(channel)) == [(mailbox(channel).encode(), 1)]
        await holder.arelease()
        lease = await asyncio.wait_for(waiting, 30)
        await lease.arelease()
        admin.publish(channel, 'sentinel')
        heard = []
        deadline = time.monotonic() + 30
        while b'sentinel' not in heard:
            assert time.monotonic() < deadline, f'the sentinel never arrived; got {heard}'
            if (message := other.get_message(timeout=0.5)) is not None:
                heard.append(message['data'])
        assert heard == [b'sentinel']  # the release named the waiter to its own mailbox only
    finally:
        other.close()
        await holder.arelease()
        if not waiting.done():
            waiting.cancel()
        await asyncio.wait({waiting})


@pytest.mark.usefixtures('no_fallback_poll')
@pytest.mark.parametrize('kind', KINDS)
async def test_the_channels_the_readme_tells_an_acl_to_allow_are_enough(
    make: Callable[..., Cachify], server: RedisServer, admin: redis.Redis, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the mailboxes ('&*:released'), wake-ups never come back to pub/sub speed.
    monkeypatch.setattr(sys.modules['py_cachify.pool'], 'HEARD_POLL', 60.0)
    acl = ['ACL', 'SETUSER', 'app', 'on', 'nopass', '~*', 'resetchannels', '&*:released*', '+@all']
    admin.execute_command(*acl)  # type: ignore[no-untyped-call]
    cachify = make(kind, f'redis://app:any@127.0.0.1:{server.port}/0')
    took, _ = await until_pubsub_speed(cachify, 'allowed', kind)
    assert took < 10.0
    assert await pubsub_p50(cachify, 'allowed', kind) < PUBSUB_SPEED


def _mailbox_in_child(conn: Connection) -> None:
    conn.send((mailbox('ch'), new_slot_id()[:TOKEN_CHARS]))


def test_a_forked_child_has_a_mailbox_of_its_own() -> None:
    box, token = from_forked_child(_mailbox_in_child)
    assert box == f'ch:{token}'  # its slot ids begin with its own token
    assert box != mailbox('ch')
    assert new_slot_id()[:TOKEN_CHARS] == mailbox('ch')[-TOKEN_CHARS:]


@pytest.mark.parametrize('kind', KINDS)
async def test_a_refused_subscribe_neither_stalls_waiters_nor_poisons_wake_ups(
    make: Callable[..., Cachify], server: RedisServer, admin: redis.Redis, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A user allowed everything but SUBSCRIBE: the pools work, the wake-ups cannot.
    admin.execute_command('ACL', 'SETUSER', 'app', 'on', 'nopass', '~*', '&*', '+@all', '-subscribe')  # type: ignore[no-untyped-call]
    cachify = make(kind, f'redis://app:any@127.0.0.1:{server.port}/0')

    # Waiters carry on by their fallback poll, without waiting for the subscription.
    assert await hand_over(cachify, 'refused', kind) < 2.0
    holder = await cachify.pool('refused', max_size=1).aacquire()
    impatient = cachify.pool('refused', max_size=1, nowait=False, timeout=1)
    started = time.monotonic()
    with pytest.raises(CachifyPoolFullError):
        await (asyncio.to_thread(impatient.acquire) if kind == 'thread' else impatient.aacquire())
    assert time.monotonic() - started < 3.0
    await holder.arelease()

    # Allowed again: only messages wake waiters from now on, and they do within a second.
    monkeypatch.setattr(sys.modules['py_cachify.pool'], 'FALLBACK_POLL', 60.0)
    admin.execute_command('ACL', 'SETUSER', 'app', '+subscribe')  # type: ignore[no-untyped-call]
    took, latency = await until_pubsub_speed(cachify, 'refused', kind)
    print(
        f'\nrefused SUBSCRIBE lifted ({kind}): pub/sub wake-ups back after {took:.3f} s, '
        f'then a hand-over took {latency * 1000:.1f} ms'
    )
    assert took < 3.0  # goal: 1 s; the subscriber retries at least every 0.5 s
    assert await pubsub_p50(cachify, 'refused', kind) < PUBSUB_SPEED


@pytest.mark.usefixtures('no_fallback_poll')
@pytest.mark.parametrize('kind', KINDS)
async def test_a_release_missed_while_the_subscriber_was_down_wakes_its_waiter_on_resubscribe(
    make: Callable[..., Cachify], server: RedisServer, admin: redis.Redis, kind: str
) -> None:
    admin.execute_command('ACL', 'SETUSER', 'app', 'on', 'nopass', '~*', '&*', '+@all')  # type: ignore[no-untyped-call]
    cachify = make(kind, f'redis://app:any@127.0.0.1:{server.port}/0')
    await hand_over(cachify, 'missed', kind)  # subscribed
    holder = await cachify.pool('missed', max_size=1).aacquire()
    waiter = cachify.pool('missed', max_size=1, nowait=False, timeout=20)
    waiting = asyncio.ensure_future(
        asyncio.to_thread(lambda: waiter.acquire().release()) if kind == 'thread' else _take_and_give(waiter)
    )
    try:
        await until(lambda: cachify.settings.backend.wakeups.waiting(channel_of(cachify, 'missed')))
        # Cut the subscriber off and keep it off while the slot is released: the message is lost.
        admin.execute_command('ACL', 'SETUSER', 'app', '-subscribe')  # type: ignore[no-untyped-call]
        assert admin.execute_command('CLIENT', 'KILL', 'TYPE', 'pubsub') >= 1  # type: ignore[no-untyped-call]
        await holder.arelease()
        await asyncio.sleep(0.3)
        assert not waiting.done()  # nothing woke it: no message, no poll
        admin.execute_command('ACL', 'SETUSER', 'app', '+subscribe')  # type: ignore[no-untyped-call]
        lifted = time.monotonic()
        await asyncio.wait_for(asyncio.shield(waiting), 10)
        assert time.monotonic() - lifted < 3.0  # woken by the new subscription itself
    finally:
        await holder.arelease()
        await asyncio.wait({waiting})


async def _take_and_give(waiter: Any) -> None:
    async with waiter:
        pass


@pytest.mark.usefixtures('no_fallback_poll')
@pytest.mark.parametrize('kind', KINDS)
async def test_wake_ups_come_back_after_the_subscriber_connection_is_killed(
    make: Callable[..., Cachify], admin: redis.Redis, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    cachify = make(kind)
    await hand_over(cachify, 'killed', kind)
    with caplog.at_level(logging.INFO, logger='py_cachify'):
        for _ in range(3):
            assert admin.execute_command('CLIENT', 'KILL', 'TYPE', 'pubsub') >= 1  # type: ignore[no-untyped-call]
            took, _ = await until_pubsub_speed(cachify, 'killed', kind, deadline=10)
            assert took < 3.0
        assert await pubsub_p50(cachify, 'killed', kind) < PUBSUB_SPEED
    assert len(wakeup_records(caplog, logging.WARNING)) <= 3  # one per kill at most, no traceback per retry
    assert all(r.exc_info is None for r in wakeup_records(caplog, logging.WARNING))


@pytest.mark.slow
@pytest.mark.usefixtures('no_fallback_poll')
@pytest.mark.parametrize('kind', KINDS)
async def test_wake_ups_follow_a_cluster_failover(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    with RedisCluster(replicas=1, node_timeout_ms=1000) as cluster:
        sync_client = redis.cluster.RedisCluster.from_url(cluster.url) if kind == 'thread' else None
        async_client = redis.asyncio.cluster.RedisCluster.from_url(cluster.url)
        cachify = init_cachify(sync_client, async_client, prefix='failover-', is_global=False)
        try:
            await hand_over(cachify, 'moving', kind)
            master = cluster.master_of(channel_of(cachify, 'moving'))
            with redis.Redis(port=master.port) as node:
                # The subscriber is there (SSUBSCRIBEd on Redis >= 7, where the cluster shards pub/sub).
                assert any(int(c['sub']) + int(c.get('ssub', 0)) > 0 for c in node.client_list())
            with caplog.at_level(logging.INFO, logger='py_cachify'):
                master.kill()
                cluster.wait_for_failover(master)
                failed_over = time.monotonic()
                took, _ = await until_pubsub_speed(cachify, 'moving', kind, deadline=60)
                p50 = await pubsub_p50(cachify, 'moving', kind)
            print(
                f'\ncluster failover ({kind}): pub/sub wake-ups back {took:.3f} s after the replica took over '
                f'({time.monotonic() - failed_over:.3f} s with checks), p50 {p50 * 1000:.1f} ms'
            )
            assert p50 < PUBSUB_SPEED
            assert 1 <= len(wakeup_records(caplog, logging.WARNING)) <= 3
        finally:
            await cachify.aclose()
            if sync_client is not None:
                sync_client.close()
            await async_client.aclose()


def _child_waits(cachify: Cachify, key: str, conn: Connection, rounds: int) -> None:
    """In a forked child: each round, wait for the parent's release and report when it came."""
    waiter = cachify.pool(key, max_size=1, nowait=False, timeout=15, fair=True)
    try:
        for _ in range(rounds):
            conn.recv()
            with waiter:
                conn.send(time.monotonic())
    except BaseException as exc:
        conn.send(repr(exc))
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.usefixtures('no_fallback_poll')
@pytest.mark.filterwarnings('ignore:This process .* is multi-threaded:DeprecationWarning')
async def test_a_forked_child_is_woken_by_releases(make: Callable[..., Cachify], admin: redis.Redis) -> None:
    cachify = make('thread')
    await hand_over(cachify, 'forked', 'thread')  # the parent has waited: it is subscribed
    holder = cachify.pool('forked', max_size=1, nowait=False, timeout=15)
    queue_key = pool_keys(cachify.settings.prefix + 'forked').queue
    rounds = 20
    parent_end, child_end = multiprocessing.get_context('fork').Pipe()
    child = multiprocessing.get_context('fork').Process(
        target=_child_waits, args=(cachify, 'forked', child_end, rounds)
    )
    child.start()
    latencies = []
    try:
        for _ in range(rounds):
            lease = await asyncio.to_thread(holder.acquire)
            parent_end.send('go')
            await until(lambda: admin.zcard(queue_key) == 1, what='the child queueing')
            await asyncio.sleep(0.02)  # from its try into its wait
            released = time.monotonic()
            lease.release()
            assert await asyncio.to_thread(parent_end.poll, 30)
            woken = parent_end.recv()
            assert isinstance(woken, float), woken
            latencies.append(woken - released)
    finally:
        parent_end.close()
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join()
    p50 = statistics.median(latencies)
    print(f'\nforked child: release-to-wake p50 {p50 * 1000:.2f} ms, max {max(latencies) * 1000:.2f} ms')
    assert child.exitcode == 0
    assert p50 < 0.010


def _cpu_seconds(thread: threading.Thread) -> float:
    """CPU time used so far by `thread` (Linux: the scheduler's own count, in ns)."""
    stats = Path(f'/proc/self/task/{thread.native_id}/schedstat').read_text().split()
    return int(stats[0]) / 1e9


@pytest.mark.skipif(not Path('/proc/self/task').is_dir(), reason='reads per-thread CPU time from /proc')
async def test_an_idle_listener_thread_uses_next_to_no_cpu(make: Callable[..., Cachify]) -> None:
    cachify = make('thread')
    await hand_over(cachify, 'idle', 'thread')  # subscribed, then nobody waits
    thread = cachify.settings.backend._subscriber.thread  # type: ignore[attr-defined]
    assert thread is not None
    assert thread.is_alive()
    before, started = _cpu_seconds(thread), time.monotonic()
    await asyncio.sleep(2.0)
    share = (_cpu_seconds(thread) - before) / (time.monotonic() - started)
    print(f'\nidle listener thread: {share * 100:.4f}% of a core')
    assert share < 0.002


@pytest.mark.parametrize('kind', KINDS)
async def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    make: Callable[..., Cachify], server: RedisServer, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    cachify = make(kind)
    await hand_over(cachify, 'outage', kind)
    with caplog.at_level(logging.INFO, logger='py_cachify'):
        server.stop()
        await until(lambda: wakeup_records(caplog, logging.WARNING), timeout=10, what='a warning')
        await asyncio.sleep(3)  # the outage goes on while the listener retries
        server.restart()
        await until(lambda: wakeup_records(caplog, logging.INFO), timeout=10, what='the recovery')
    assert len(wakeup_records(caplog, logging.WARNING)) == 1
    assert len(wakeup_records(caplog, logging.INFO)) == 1
    assert wakeup_records(caplog, logging.WARNING)[0].exc_info is None


def _subscribers(admin: redis.Redis) -> int:
    return sum(1 for c in admin.client_list() if int(c['sub']) > 0)


@pytest.mark.parametrize('kind', KINDS)
async def test_close_stops_the_listener_and_closes_its_connection(
    make: Callable[..., Cachify], admin: redis.Redis, kind: str
) -> None:
    cachify = make(kind)
    await hand_over(cachify, 'closing', kind)
    await until(lambda: _subscribers(admin) == 1, what='one subscriber connection')
    subscriber: Any = cachify.settings.backend._subscriber  # type: ignore[attr-defined]
    listener: Any = subscriber.thread if kind == 'thread' else subscriber.subscriber().task
    if kind == 'thread':
        await asyncio.to_thread(cachify.close)
        assert not listener.is_alive()
    else:
        await cachify.aclose()
        assert listener.done()
    await until(lambda: _subscribers(admin) == 0, timeout=10, what='no subscriber connection')
    # Pools still work after close, waiting by polling.
    assert await hand_over(cachify, 'closing', kind) < 2.0
    assert _subscribers(admin) == 0


@pytest.mark.usefixtures('no_fallback_poll')
def test_each_asyncio_run_gets_its_own_listener_task_and_closes_it(
    server: RedisServer, admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.asyncio.Redis.from_url(server.url)
    cachify = init_cachify(async_client=client, prefix='runs-', is_global=False)

    async def one_run() -> float:
        try:
            return await hand_over(cachify, 'runs', 'task')
        finally:
            await client.connection_pool.disconnect()  # the client's connections belong to this loop

    with caplog.at_level(logging.INFO, logger='py_cachify'):
        for _ in range(3):
            assert asyncio.run(one_run()) < PUBSUB_SPEED  # woken by its own loop's listener
    # Each loop's listener closed its connection when asyncio.run() cancelled it.
    deadline = time.monotonic() + 10
    while _subscribers(admin) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _subscribers(admin) == 0
    assert not wakeup_records(caplog, logging.WARNING)
    assert 'Task was destroyed' not in caplog.text
    cachify.close()


def _pubsub_connections(admin: redis.Redis) -> int:
    """Connections in pub/sub use, subscribed or not (their last command was one of these)."""
    return sum(1 for c in admin.client_list() if c['cmd'] in ('subscribe', 'unsubscribe', 'ping'))


@pytest.mark.usefixtures('no_fallback_poll')
@pytest.mark.parametrize('kind', KINDS)
async def test_an_idle_channel_is_forgotten_and_its_connection_closed_until_a_waiter_needs_it(
    make: Callable[..., Cachify], admin: redis.Redis, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, 'IDLE_UNSUBSCRIBE', 0.3)
    monkeypatch.setattr(subscription, 'CHECK_EVERY', 0.3)
    cachify = make(kind)
    await hand_over(cachify, 'idle-channel', kind)
    await until(lambda: _pubsub_connections(admin) == 1, what='a subscriber connection')
    await until(lambda: _pubsub_connections(admin) == 0, timeout=10, what='the idle subscriber closing')
    assert await hand_over(cachify, 'idle-channel', kind) < PUBSUB_SPEED  # subscribed again on demand


def test_the_subscription_state_machine(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    woken: list[str] = []
    wakeups = Wakeups()
    wakeups.add('ch', 'w1', lambda: woken.append('w1'))
    machine = Subscriptions(wakeups, clock=lambda: now[0])
    assert machine.request('ch')
    assert not machine.request('ch')  # asked once, however many waiters ask
    box = mailbox('ch')  # a waiter's request subscribes the channel and this process's mailbox on it
    plan = machine.plan()
    assert (plan.connect, plan.refresh, plan.subscribe) == (True, False, ['ch', box])
    assert machine.state('ch') is machine.state(box) is State.SENT
    machine.connected()
    assert machine.plan().subscribe == []  # sent already: not again
    machine.confirmed('ch')
    assert machine.state('ch') is State.SUBSCRIBED
    assert (woken, wakeups.heard('ch')) == ([], False)  # a named message could still be lost
    machine.confirmed(box)
    assert wakeups.heard('ch')
    assert woken == ['w1']  # confirming both wakes the channel's waiters once

    with caplog.at_level(logging.INFO, logger='py_cachify'):
        for delay in (0.025, 0.05, 0.1, 0.2, 0.4, 0.5, 0.5):
            machine.failed(ConnectionError('refused'))
            assert machine.state('ch') is State.REQUESTED  # never remembered as done
            plan = machine.plan()
            assert not plan.connect
            assert plan.wait == pytest.approx(delay)  # backs off, up to 0.5 s
            now[0] += delay
            plan = machine.plan()
            assert (plan.connect, plan.refresh, plan.subscribe) == (True, True, ['ch', box])
        machine.connected()
        machine.confirmed(box)
        machine.confirmed('ch')
    assert [r.levelname for r in caplog.records] == ['WARNING', 'INFO']  # once per outage
    assert woken == ['w1', 'w1']
    machine.failed(ConnectionError('again'))
    assert machine.plan().wait == pytest.approx(0.025)  # a confirmed subscription reset the backoff

    # Nobody waited for a while: forgotten, and nothing to connect for.
    wakeups.discard('ch', 'w1')
    monkeypatch.setattr(notify, 'IDLE_UNSUBSCRIBE', -1.0)
    now[0] += notify.IDLE_UNSUBSCRIBE + 60
    plan = machine.plan()
    assert machine.state('ch') is machine.state(box) is None
    assert (plan.connect, plan.wait) == (False, None)

    machine.close()
    assert machine.plan().stop
    assert not machine.request('ch')


def test_the_state_machine_pings_and_gives_up_on_a_silent_connection(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    wakeups = Wakeups()
    wakeups.add('ch', 'w1', lambda: None)
    machine = Subscriptions(wakeups, clock=lambda: now[0])
    machine.request('ch')
    machine.plan()
    machine.connected()
    machine.confirmed('ch')
    assert machine.plan().wait == pytest.approx(subscription.CHECK_EVERY)  # idle: one wake-up per check
    now[0] += subscription.CHECK_EVERY
    assert machine.plan().ping
    machine.ponged()
    now[0] += subscription.CHECK_EVERY
    assert machine.plan().ping  # answered: alive, asked again
    now[0] += subscription.CHECK_EVERY
    with caplog.at_level(logging.WARNING, logger='py_cachify'):
        plan = machine.plan()  # not answered: dead without a word
    assert plan.disconnect
    assert not plan.ping
    assert machine.state('ch') is State.REQUESTED
    assert 'stopped answering PING' in caplog.text
    now[0] += 1
    assert machine.plan().subscribe == ['ch', mailbox('ch')]


class SilentProxy:
    """A TCP proxy to a server that can make its subscriber connections go silent.

    Like a NAT or a load balancer that forgot an idle connection: nothing passes in either
    direction any more, yet neither end is told. New connections pass as before.
    """

    def __init__(self, port: int) -> None:
        self._target = port
        self._listener = socket.create_server(('127.0.0.1', 0))
        self.port: int = self._listener.getsockname()[1]
        self._peers: dict[socket.socket, socket.socket] = {}
        self._subscribers: set[socket.socket] = set()
        self._silent: frozenset[socket.socket] = frozenset()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='silent-proxy', daemon=True)
        self._thread.start()

    def silence_subscribers(self) -> None:
        self._silent = frozenset(self._subscribers | {self._peers[s] for s in self._subscribers if s in self._peers})

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in [self._listener, *self._peers]:
            sock.close()

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(0.05):
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    if sock is self._listener:
                        client, _ = sock.accept()
                        upstream = socket.create_connection(('127.0.0.1', self._target))
                        self._peers[client], self._peers[upstream] = upstream, client
                        selector.register(client, selectors.EVENT_READ)
                        selector.register(upstream, selectors.EVENT_READ)
                        continue
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b''
                    if sock in self._silent:
                        continue  # swallowed: the path is dead
                    peer = self._peers[sock]
                    if not data:
                        for end in (sock, peer):
                            selector.unregister(end)
                            end.close()
                            self._peers.pop(end, None)
                        continue
                    if b'SUBSCRIBE' in data.upper():
                        self._subscribers.add(sock)
                    peer.sendall(data)


@pytest.mark.usefixtures('no_fallback_poll')
@pytest.mark.parametrize('kind', KINDS)
async def test_a_subscriber_connection_that_went_silent_is_noticed_and_replaced(
    make: Callable[..., Cachify], server: RedisServer, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subscription, 'CHECK_EVERY', 0.3)
    proxy = SilentProxy(server.port)
    cachify = make(kind, f'redis://127.0.0.1:{proxy.port}/0')
    try:
        await hand_over(cachify, 'silent', kind)
        proxy.silence_subscribers()
        took, _ = await until_pubsub_speed(cachify, 'silent', kind, deadline=20)
        assert took < 3.0  # two checks and a reconnect
        assert await pubsub_p50(cachify, 'silent', kind) < PUBSUB_SPEED
    finally:
        await cachify.aclose()
        proxy.close()
