"""What the pool scripts cost Redis: the common acquire and release stay short, and a release
publishes only while someone waits (issue 11). Counted on a server of the test's own, where
nothing else runs commands."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import get_args

import pytest
import redis

from py_cachify.ops import RESERVE_MS, Call, ScriptName, acquire_call, pool_keys, release_call
from py_cachify.scripts import source
from tests.redis_server import RedisServer

SENTINEL = 'sentinel'  # published after a call: every message the call sent has arrived before it


@pytest.fixture
def own_client() -> Iterator[redis.Redis]:
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        try:
            yield client
        finally:
            client.close()


def run(client: redis.Redis, call: Call) -> object:
    return client.register_script(source(call.script))(keys=call.keys, args=call.args)


def commands_inside(client: redis.Redis, call: Call) -> tuple[object, int]:
    """`call`'s reply, and how many commands its script ran inside Redis (EVALSHA itself left out)."""
    script = client.register_script(source(call.script))
    client.script_load(script.script)  # loading is not what is counted

    def counts() -> dict[str, int]:
        stats = client.info('commandstats')
        return {name: row['calls'] for name, row in stats.items() if name not in ('cmdstat_evalsha', 'cmdstat_info')}

    before = counts()
    reply = script(keys=call.keys, args=call.args)
    after = counts()
    return reply, sum(after[name] - before.get(name, 0) for name in after)


@pytest.mark.parametrize('live', [0, 100])
def test_the_common_acquire_and_release_run_few_commands(own_client: redis.Redis, live: int) -> None:
    # Nothing expired and nobody waiting: TIME, ZCOUNT, ZCARD, ZCARD, ZADD, PEXPIREAT for an
    # acquire and TIME, ZSCORE, ZREM, ZCARD for a release. It was 9 to 10 and 9, with a
    # PUBLISH on every release whether anyone waited or not. Redis 6.2 has no PEXPIREAT GT,
    # so there the acquire reads the PTTL first: one command more.
    before_gt = int(str(own_client.info('server')['redis_version']).split('.')[0]) < 7
    for i in range(live):
        run(own_client, acquire_call('cost-', 'pool', f'other-{i}', live + 10, 60_000))
    for slot in 'abc':
        reply, inside = commands_inside(own_client, acquire_call('cost-', 'pool', slot, live + 10, 60_000))
        assert reply == [1, live + 1 + 'abc'.index(slot), -1]
        assert inside <= (7 if before_gt else 6)
    for slot in 'abc':
        reply, inside = commands_inside(own_client, release_call('cost-', 'pool', slot, live + 10))
        assert reply == 1
        assert inside <= 4
    assert own_client.info('commandstats').get('cmdstat_publish', {'calls': 0})['calls'] == 0


def messages_until_sentinel(client: redis.Redis, pubsub: redis.client.PubSub, channel: str) -> list[bytes]:
    client.publish(channel, SENTINEL)
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message is None:
            continue
        if message['data'] == SENTINEL.encode():
            return got
        got.append(message['data'])
    raise AssertionError(f'the sentinel never arrived; got {got}')


def test_a_release_publishes_only_while_someone_waits(own_client: redis.Redis) -> None:
    keys = pool_keys('cost-waited')
    pubsub = own_client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.psubscribe(keys.channel + '*')  # the channel, and every mailbox on it
        assert run(own_client, acquire_call('cost-', 'waited', 'holder', 1, 60_000)) == [1, 1, -1]
        assert run(own_client, release_call('cost-', 'waited', 'holder', 1)) == 1
        assert messages_until_sentinel(own_client, pubsub, keys.channel) == []  # nobody waited

        assert run(own_client, acquire_call('cost-', 'waited', 'holder', 1, 60_000))[0] == 1
        # A waiter out of any queue (fair=False) is turned away, and holds a lease from then on.
        waiter = acquire_call('cost-', 'waited', 'waiter', 1, 60_000, wait=True)
        assert run(own_client, waiter)[0] == 0
        assert own_client.zrange(keys.leases, 0, -1) == [b'waiter']
        assert own_client.exists(keys.queue) == 0  # no place in the fair queue
        # The release names that waiter (one wake-up in the whole fleet, not one per process)
        # and holds the slot for it: it joins the queue, and its lease ends with the hold, so
        # a dead waiter is never named again. Naming it and taking its lease took 10 commands;
        # holding the slot takes 13: ZADD to the queue and its PEXPIREAT, ZADD to the leases
        # and their PEXPIREAT GT (PTTL before Redis 7) instead of the ZREM.
        reply, inside = commands_inside(own_client, release_call('cost-', 'waited', 'holder', 1))
        assert reply == 1
        assert inside <= 13
        assert messages_until_sentinel(own_client, pubsub, keys.channel) == [b'waiter']
        assert own_client.zrange(keys.queue, 0, -1) == [b'waiter']
        seconds, micros = own_client.time()
        assert own_client.zscore(keys.leases, 'waiter') <= int(seconds) * 1000 + int(micros) // 1000 + RESERVE_MS
        assert own_client.pttl(keys.queue) > 0  # the queue key lives as long as its latest lease

        # Its acquire, once served, leaves no lease nor queue place: the next release wakes
        # nobody again.
        assert run(own_client, waiter)[0] == 1
        assert own_client.exists(keys.leases, keys.queue) == 0
        assert run(own_client, release_call('cost-', 'waited', 'waiter', 1)) == 1
        assert messages_until_sentinel(own_client, pubsub, keys.channel) == []
    finally:
        pubsub.close()


def test_each_script_carries_only_the_library_parts_it_uses(own_client: redis.Redis) -> None:
    # An unused helper still costs Redis a closure on every call of the script.
    for name in get_args(ScriptName):
        own_client.script_load(source(name))  # it compiles
    assert 'local function publish' not in source('acquire')
    assert 'local function keep_ttl' not in source('leave')
    assert 'local function live_count' not in source('leave')
    # Release and leave hold a slot for the waiter they name, for as long as the embedded
    # store holds it.
    for name in ('release', 'leave'):
        assert 'local function reserve_waiter' in source(name)
        assert f'local RESERVE_MS = {RESERVE_MS}\n' in source(name)
    assert 'local function publish' in source('release')
    assert 'local function live_after_drop' in source('acquire')
