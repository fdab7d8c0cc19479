"""Outages: a frozen or paused server costs the caller one failed call, and no slot leaks.

Each test starts a redis-server of its own, since it freezes it (SIGSTOP) or pauses it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from py_cachify import Cachify, CachifyBackendError, init_cachify

from .redis_server import RedisServer
from .waiting import await_until, wait_until

SOCKET_TIMEOUT = 0.5


@pytest.fixture
async def cachify(server: RedisServer) -> AsyncIterator[Cachify]:
    # No client-side retries, so one failed call takes one socket timeout.
    options = {
        'socket_timeout': SOCKET_TIMEOUT,
        'socket_connect_timeout': SOCKET_TIMEOUT,
        'retry': Retry(NoBackoff(), 0),
    }
    sync_client = redis.Redis.from_url(server.url, **options)  # type: ignore[arg-type]
    async_client = redis.asyncio.Redis.from_url(server.url, **options)  # type: ignore[arg-type]
    cachify = init_cachify(sync_client, async_client, prefix='outage-', is_global=False)
    yield cachify
    await cachify.aclose()
    sync_client.close()
    await async_client.aclose()


def freeze(server: RedisServer) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)


def thaw(server: RedisServer) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGCONT)


def size(server: RedisServer) -> int:
    # Read with a client of the test's own, not through the library under test.
    with redis.Redis.from_url(server.url) as client:
        return int(client.zcard('{outage-frozen}:slots'))


async def test_a_release_during_a_freeze_fails_fast_and_lands_after_it(server: RedisServer, cachify: Cachify) -> None:
    p = cachify.pool('frozen', max_size=1)  # slot_exp 600 s: a lost release would keep the slot that long
    lease = p.acquire()
    freeze(server)
    try:
        started = time.monotonic()
        with pytest.raises(CachifyBackendError) as raised:
            lease.release()
        failed_after = time.monotonic() - started
        assert raised.value.transient
        assert cachify.settings.backend.give_backs.pending() == 1
    finally:
        thaw(server)
    assert failed_after < 1.8 * SOCKET_TIMEOUT, f'the caller waited {failed_after:.2f} s'
    wait_until(lambda: size(server) == 0, what='the release to land after the freeze')
    wait_until(lambda: cachify.settings.backend.give_backs.pending() == 0)


@pytest.mark.parametrize('mode', ['sync', 'async'])
async def test_an_acquire_that_timed_out_in_a_freeze_is_given_back_when_it_lands(
    server: RedisServer, cachify: Cachify, mode: str
) -> None:
    p = cachify.pool('frozen', max_size=1)
    freeze(server)
    try:
        started = time.monotonic()
        with pytest.raises(CachifyBackendError):
            await (asyncio.to_thread(p.acquire) if mode == 'sync' else p.aacquire())
        failed_after = time.monotonic() - started
        # The acquire sits in the frozen server's socket buffer and runs when it wakes.
        await asyncio.sleep(SOCKET_TIMEOUT)  # let the give-back fail a few times meanwhile
    finally:
        thaw(server)
    assert failed_after < 1.8 * SOCKET_TIMEOUT, f'the caller waited {failed_after:.2f} s'
    await await_until(lambda: size(server) == 0, what='the late acquire to be given back')
    await await_until(lambda: cachify.settings.backend.give_backs.pending() == 0)
    with redis.Redis.from_url(server.url) as client:
        assert client.exists('{outage-frozen}:slots') == 0


async def test_a_paused_server_makes_with_fail_fast_and_leaves_no_slot(server: RedisServer, cachify: Cachify) -> None:
    p = cachify.pool('frozen', max_size=1)
    with redis.Redis.from_url(server.url) as admin:
        admin.execute_command('CLIENT', 'PAUSE', 1500, 'WRITE')  # type: ignore[no-untyped-call]
        started = time.monotonic()
        with pytest.raises(CachifyBackendError):  # a timeout, never "full"
            async with p:
                pass
        assert time.monotonic() - started < 1.8 * SOCKET_TIMEOUT
    await await_until(lambda: size(server) == 0, what='no slot left once the pause ends')
    await await_until(lambda: cachify.settings.backend.give_backs.pending() == 0)
    async with p:  # and the pool works again, with no re-init
        assert await p.asize() == 1
