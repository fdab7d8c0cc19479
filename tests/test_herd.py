"""No thundering herd (issue 11): a release wakes one waiter in the whole fleet, not one per process.

Each test has a redis-server of its own, so `INFO commandstats` counts its calls alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from multiprocessing.process import BaseProcess
from typing import Any

import pytest
import redis
import redis.asyncio

from py_cachify import Cachify, CachifyPoolFullError, init_cachify
from py_cachify.mailbox import addressed
from py_cachify.ops import HEARD_POLL, RESERVE_MS, Call, acquire_call, leave_call, pool_keys, release_call
from py_cachify.scripts import source

from .redis_server import RedisServer
from .test_redis_model import expire_time_ms
from .waiting import TIMEOUT, await_until, wait_until

PREFIX = 'herd-'
ctx = multiprocessing.get_context('spawn')


@pytest.fixture
def admin(admin: redis.Redis) -> redis.Redis:
    for name in ('acquire', 'release', 'leave'):
        admin.script_load(source(name))  # no NOSCRIPT round trip lands inside a count
    return admin


@pytest.fixture
def cachify(server: RedisServer) -> Iterator[Cachify]:
    client = redis.Redis(port=server.port)
    made = init_cachify(sync_client=client, prefix=PREFIX, is_global=False)
    yield made
    made.close()
    client.close()


def evalsha_calls(admin: redis.Redis) -> int:
    return int(admin.info('commandstats').get('cmdstat_evalsha', {}).get('calls', 0))


def leases(admin: redis.Redis, key: str) -> list[str]:
    return [m.decode() for m in admin.zrange(pool_keys(PREFIX + key).leases, 0, -1)]


def queued(admin: redis.Redis, key: str) -> list[str]:
    return [m.decode() for m in admin.zrange(pool_keys(PREFIX + key).queue, 0, -1)]


def server_ms(admin: redis.Redis) -> int:
    seconds, micros = admin.time()
    return int(seconds) * 1000 + int(micros) // 1000


def waiters(url: str, key: str, threads: int, go: Any) -> None:
    """A process of `threads` waiters, each taking the slot once (unfair) and giving it back."""
    cachify = init_cachify(sync_client=redis.Redis.from_url(url), prefix=PREFIX, is_global=False)
    backend = cachify.settings.backend
    channel = pool_keys(PREFIX + key).channel
    # Subscribed before any waiter starts: the confirmation then wakes nobody, and every try
    # the test counts comes from a release's message.
    backend.listen(channel)
    wait_until(lambda: backend.wakeups.heard(channel), what='the channel is subscribed')
    go.wait(TIMEOUT)

    def take() -> None:
        with cachify.pool(key, 1, nowait=False, timeout=TIMEOUT):
            time.sleep(0.002)

    started = [threading.Thread(target=take) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    cachify.close()


def stop(processes: list[BaseProcess]) -> None:
    for process in processes:
        if process.is_alive():
            process.kill()
        process.join()


def test_a_release_wakes_one_waiter_across_processes(server: RedisServer, admin: redis.Redis, cachify: Cachify) -> None:
    # 4 processes of 3 waiters each queue up behind a holder, then take the slot one after
    # the other. Each release named one waiter: none tries in vain. Before, a release woke
    # one waiter in each process that still had some, and all but one tried in vain.
    processes, threads = 4, 3
    go = ctx.Event()
    holder = cachify.pool('one', 1).acquire()
    started = [ctx.Process(target=waiters, args=(server.url, 'one', threads, go)) for _ in range(processes)]
    try:
        for process in started:
            process.start()
        channel = pool_keys(PREFIX + 'one').channel
        wait_until(lambda: admin.pubsub_numsub(channel)[0][1] == processes, what='every process subscribed')
        go.set()
        wait_until(lambda: len(leases(admin, 'one')) == processes * threads, what='every waiter had its first try')
        before = evalsha_calls(admin)
        holder.release()
        for process in started:
            process.join(TIMEOUT * 2)
            assert process.exitcode == 0, f'{process.name} ended with {process.exitcode}'
    finally:
        stop(started)
    waiters_ = processes * threads
    # Every waiter's acquire that succeeded and release, the holder's release: nothing else,
    # but a waiter's fallback poll (every HEARD_POLL) on a machine slow enough to reach it.
    in_vain = evalsha_calls(admin) - before - (waiters_ + waiters_ + 1)
    assert 0 <= in_vain <= 2, f'{in_vain} tries in vain for {waiters_} hand-overs'
    assert leases(admin, 'one') == []


def lone_waiter(url: str, key: str) -> None:
    """One waiter, waiting as long as it takes; the test kills it or lets it through."""
    cachify = init_cachify(sync_client=redis.Redis.from_url(url), prefix=PREFIX, is_global=False)
    with cachify.pool(key, 1, nowait=False):
        pass
    cachify.close()


def test_a_killed_named_waiter_holds_up_the_others_no_longer_than_their_fallback_poll(
    server: RedisServer, admin: redis.Redis, cachify: Cachify
) -> None:
    holder = cachify.pool('killed', 1).acquire()
    doomed = ctx.Process(target=lone_waiter, args=(server.url, 'killed'))
    survivor = ctx.Process(target=lone_waiter, args=(server.url, 'killed'))
    try:
        doomed.start()
        wait_until(lambda: len(leases(admin, 'killed')) == 1, what='the first waiter had its first try')
        [named] = leases(admin, 'killed')  # the first to try is named first
        survivor.start()
        wait_until(lambda: len(leases(admin, 'killed')) == 2, what='the second waiter had its first try')
        assert doomed.pid is not None
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.join()
        released = time.monotonic()
        holder.release()
        # The dead waiter was named, and the slot held for it a short while (RESERVE_MS): its
        # lease ends with the hold, so it is never named again.
        keys = pool_keys(PREFIX + 'killed')
        assert admin.zrange(keys.queue, 0, -1) == [named.encode()]
        assert (admin.zscore(keys.leases, named) or 0) <= server_ms(admin) + RESERVE_MS
        survivor.join(HEARD_POLL + TIMEOUT)
        took = time.monotonic() - released
        assert survivor.exitcode == 0
    finally:
        stop([doomed, survivor])
    # Nobody else was woken: the survivor came by its fallback poll (HEARD_POLL at most, plus
    # a loaded machine's delays), not by waiting until the dead waiter's lease lapsed.
    assert took < HEARD_POLL + TIMEOUT / 3
    assert leases(admin, 'killed') == []


def test_a_timed_out_unfair_waiter_leaves_the_leases(admin: redis.Redis, cachify: Cachify) -> None:
    holder = cachify.pool('timeout', 1).acquire()
    with pytest.raises(CachifyPoolFullError):
        cachify.pool('timeout', 1, nowait=False, timeout=0.2).acquire()
    # Gone at once, not when its lease would lapse: releases stop publishing for it.
    assert leases(admin, 'timeout') == []
    holder.release()


async def test_a_cancelled_unfair_waiter_leaves_the_leases(server: RedisServer, admin: redis.Redis) -> None:
    client = redis.asyncio.Redis(port=server.port)
    cachify = init_cachify(async_client=client, prefix=PREFIX, is_global=False)
    try:
        holder = await cachify.pool('cancelled', 1).aacquire()
        waiting = asyncio.ensure_future(cachify.pool('cancelled', 1, nowait=False).aacquire())
        await await_until(lambda: leases(admin, 'cancelled'), what='the waiter had its first try')
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert leases(admin, 'cancelled') == []
        await holder.arelease()
    finally:
        await cachify.aclose()
        await client.aclose()


def messages(admin: redis.Redis, pubsub: redis.client.PubSub, channel: str) -> list[str]:
    """What was published for `channel` so far, `pubsub` from `hearing()`.

    A sentinel marks the end. Each message must have come where the scripts send it: one
    naming a waiter to the mailbox its id begins with, '' to the channel itself.
    """
    admin.publish(channel, 'sentinel')
    got: list[str] = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message is None:
            continue
        if message['data'] == b'sentinel':
            return got
        payload = message['data'].decode()
        assert message['channel'].decode() == addressed(channel, payload), message
        got.append(payload)
    raise AssertionError(f'the sentinel never arrived; got {got}')


@contextlib.contextmanager
def hearing(admin: redis.Redis, channel: str) -> Iterator[redis.client.PubSub]:
    """A pub/sub connection subscribed to `channel` and every mailbox on it (see py_cachify.mailbox)."""
    pubsub = admin.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.psubscribe(channel + '*')
        yield pubsub
    finally:
        pubsub.close()


def script_runner(admin: redis.Redis) -> Any:
    def run(call: Call) -> Any:
        return admin.register_script(source(call.script))(keys=call.keys, args=call.args)

    return run


def test_releases_name_waiters_one_each_and_a_leaving_named_waiter_passes_it_on(admin: redis.Redis) -> None:
    run = script_runner(admin)
    channel = pool_keys(PREFIX + 'named').channel
    with hearing(admin, channel) as pubsub:
        assert run(acquire_call(PREFIX, 'named', 'h1', 2, 60_000))[0] == 1
        assert run(acquire_call(PREFIX, 'named', 'h2', 2, 60_000))[0] == 1
        for waiter in ('w1', 'w2', 'w3'):
            assert run(acquire_call(PREFIX, 'named', waiter, 2, 60_000, wait=True))[0] == 0
        # Two quick releases wake two different waiters, the ones that tried first, and hold
        # a slot for each (they join the queue for that while).
        assert run(release_call(PREFIX, 'named', 'h1', 2)) == 1
        assert run(release_call(PREFIX, 'named', 'h2', 2)) == 1
        assert messages(admin, pubsub, channel) == ['w1', 'w2']
        assert queued(admin, 'named') == ['w1', 'w2']
        # w2 takes its slot; w1 gives up without trying for its own: its slot is held for w3.
        assert run(acquire_call(PREFIX, 'named', 'w2', 2, 60_000, wait=True))[0] == 1
        assert run(leave_call(PREFIX, 'named', 'w1')) == 1
        assert messages(admin, pubsub, channel) == ['w3']
        assert queued(admin, 'named') == ['w3']
        assert run(acquire_call(PREFIX, 'named', 'w3', 2, 60_000, wait=True))[0] == 1
        assert leases(admin, 'named') == queued(admin, 'named') == []
        # A waiter that still holds its lease was not named since it tried: it passes nothing on.
        assert run(acquire_call(PREFIX, 'named', 'w4', 2, 60_000, wait=True))[0] == 0
        assert run(acquire_call(PREFIX, 'named', 'w5', 2, 60_000, wait=True))[0] == 0
        assert run(leave_call(PREFIX, 'named', 'w4')) == 0
        assert messages(admin, pubsub, channel) == []
        assert leases(admin, 'named') == ['w5']
        # One whose lease is gone may have swallowed a slot: it holds one for w5, unseen by
        # leave.lua that no slot is free (w2 and w3 hold both). w5 tries in vain and goes back
        # out of the queue, on a full lease: it does not stay queued ahead of everyone.
        assert run(leave_call(PREFIX, 'named', 'gone')) == 0
        assert messages(admin, pubsub, channel) == ['w5']
        assert queued(admin, 'named') == ['w5']
        assert run(acquire_call(PREFIX, 'named', 'w5', 2, 60_000, wait=True))[0] == 0
        assert queued(admin, 'named') == []
        assert (admin.zscore(pool_keys(PREFIX + 'named').leases, 'w5') or 0) > server_ms(admin) + RESERVE_MS


def test_a_release_holds_the_slot_for_the_waiter_it_names_until_the_hold_lapses(admin: redis.Redis) -> None:
    # The releasing caller, or any other, that tries at once finds the slot held for the
    # named waiter: without the hold it took the slot back before the named waiter, still
    # being woken, could try (and an unfair crowd was never served: Jain's index 0.04).
    run = script_runner(admin)
    channel = pool_keys(PREFIX + 'held').channel
    with hearing(admin, channel) as pubsub:
        assert run(acquire_call(PREFIX, 'held', 'holder', 1, 60_000))[0] == 1
        for waiter in ('w1', 'w2'):
            assert run(acquire_call(PREFIX, 'held', waiter, 1, 60_000, wait=True))[0] == 0
        assert run(release_call(PREFIX, 'held', 'holder', 1)) == 1
        assert messages(admin, pubsub, channel) == ['w1']
        # The holder again (waiting), another waiter, a `nowait` caller: all turned away.
        assert run(acquire_call(PREFIX, 'held', 'holder', 1, 60_000, wait=True))[0] == 0
        assert run(acquire_call(PREFIX, 'held', 'w2', 1, 60_000, wait=True))[0] == 0
        assert run(acquire_call(PREFIX, 'held', 'other', 1, 60_000))[0] == 0
        assert run(acquire_call(PREFIX, 'held', 'w1', 1, 60_000, wait=True))[0] == 1
        assert queued(admin, 'held') == []
        assert sorted(leases(admin, 'held')) == ['holder', 'w2']  # w1 waits no more

        # w1's release holds the slot for the waiter that tried least recently: the holder,
        # turned away above before w2 was. It never comes: once the hold lapses (on Redis's
        # clock), the slot is anyone's again.
        assert run(release_call(PREFIX, 'held', 'w1', 1)) == 1
        assert messages(admin, pubsub, channel) == ['holder']
        lapses = admin.zscore(pool_keys(PREFIX + 'held').leases, 'holder')
        assert lapses is not None
        assert lapses <= server_ms(admin) + RESERVE_MS
        assert run(acquire_call(PREFIX, 'held', 'other', 1, 60_000))[0] == 0
        wait_until(lambda: run(acquire_call(PREFIX, 'held', 'other', 1, 60_000))[0] == 1, what='the hold lapsed')
        assert server_ms(admin) >= lapses
        assert queued(admin, 'held') == []
        assert leases(admin, 'held') == ['w2']  # the holder is gone with its hold: never named again


def test_a_holder_that_releases_and_waits_again_at_once_lets_the_named_waiter_in_first(
    admin: redis.Redis, cachify: Cachify
) -> None:
    pool = cachify.pool('barge', 1, nowait=False, timeout=TIMEOUT)
    order: list[str] = []
    lease = pool.acquire()

    def wait_once() -> None:
        with pool:
            order.append('waiter')

    waiter = threading.Thread(target=wait_once)
    waiter.start()
    try:
        channel = pool_keys(PREFIX + 'barge').channel
        wait_until(lambda: cachify.settings.backend.wakeups.heard(channel), what='the channel is heard')
        wait_until(lambda: len(leases(admin, 'barge')) == 1, what='the waiter had its first try')
        lease.release()
        with pool:  # at once, as a loop of `with pool:` does
            order.append('holder')
    finally:
        waiter.join(TIMEOUT)
    assert order == ['waiter', 'holder']


def test_a_fair_waiter_does_not_cut_short_the_leases_of_waiters_out_of_the_queue(admin: redis.Redis) -> None:
    # Fair and unfair pools on one key: the fair try's 5 s lease came after the unfair one's
    # 15 s lease and used to set the leases key to lapse first, taking the unfair lease with it.
    run = script_runner(admin)
    keys = pool_keys(PREFIX + 'mixed')
    assert run(acquire_call(PREFIX, 'mixed', 'h', 1, 60_000))[0] == 1
    assert run(acquire_call(PREFIX, 'mixed', 'unfair', 1, 60_000, wait=True))[0] == 0
    assert run(acquire_call(PREFIX, 'mixed', 'fair', 1, 60_000, queue=True, wait=True))[0] == 0
    unfair_lapses = admin.zscore(keys.leases, 'unfair')
    assert unfair_lapses is not None
    assert expire_time_ms(admin, keys.leases) >= unfair_lapses
