"""What a pool leaves in Redis: one sorted set per pool, Redis's clock, nothing left behind."""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot

from py_cachify import Cachify, CachifyPoolFullError, init_cachify
from py_cachify.ops import (
    MAX_SECONDS,
    PURGE_BATCH,
    Call,
    acquire_call,
    extend_call,
    holders_call,
    pool_keys,
    purge_call,
    release_call,
)
from py_cachify.scripts import source


@pytest.fixture
def cachify(redis_client: redis.Redis) -> Iterator[Cachify]:
    yield init_cachify(redis_client, prefix='model-', is_global=False)
    redis_client.delete(*(redis_client.keys('*model-*') or ['-']))


def server_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_a_pool_is_one_sorted_set_of_slot_ids_to_expiry_ms(cachify: Cachify, redis_client: redis.Redis) -> None:
    key = '{model-jobs}:slots'
    before = server_ms(redis_client)
    with cachify.pool('jobs', max_size=3, slot_exp=30):
        assert redis_client.keys('*model-jobs*') == [key.encode()]
        assert redis_client.type(key) == b'zset'
        [(slot, expiry)] = redis_client.zrange(key, 0, -1, withscores=True)
        # A short random id (72 bits, URL-safe base64) and a number: no pickle, nothing else.
        assert len(slot) == 12
        assert len(base64.urlsafe_b64decode(slot)) == 9
        assert before + 30_000 <= expiry <= server_ms(redis_client) + 30_000
        assert 29_000 < redis_client.pttl(key) <= 30_000
    assert redis_client.exists(key) == 0


def test_expiry_follows_the_server_clock_not_the_client(
    cachify: Cachify, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker whose clock is a day ahead must still stamp expiry from Redis's TIME.
    real = time.time
    monkeypatch.setattr(time, 'time', lambda: real() + 86_400)
    with cachify.pool('skewed', max_size=1, slot_exp=10):
        [(_, expiry)] = redis_client.zrange('{model-skewed}:slots', 0, -1, withscores=True)
        monkeypatch.undo()
        assert abs(expiry - (server_ms(redis_client) + 10_000)) < 2_000


def test_key_ttl_only_rises_to_cover_the_latest_slot(cachify: Cachify, redis_client: redis.Redis) -> None:
    key = '{model-ttl}:slots'
    long, short = cachify.pool('ttl', max_size=5, slot_exp=60), cachify.pool('ttl', max_size=5, slot_exp=5)
    with long:
        assert redis_client.pttl(key) > 59_000
        with short:
            assert redis_client.pttl(key) > 59_000  # a shorter slot does not cut the key's life
        with cachify.pool('ttl', max_size=5, slot_exp=120):
            assert redis_client.pttl(key) > 119_000


def test_a_never_expiring_slot_keeps_the_key_and_its_release_rearms_the_ttl(
    cachify: Cachify, redis_client: redis.Redis
) -> None:
    key = '{model-forever}:slots'
    finite = cachify.pool('forever', max_size=5, slot_exp=30)
    forever = cachify.pool('forever', max_size=5, slot_exp=None)
    with finite:
        with forever:
            assert redis_client.zscore(key, redis_client.zrange(key, -1, -1)[0]) == float('inf')
            assert redis_client.pttl(key) == -1
        # Only the 30 s slot is left: the key must not outlive it.
        assert 0 < redis_client.pttl(key) <= 30_000
    assert redis_client.exists(key) == 0


def test_an_abandoned_pool_key_expires_with_its_last_slot(cachify: Cachify, redis_client: redis.Redis) -> None:
    p = cachify.pool('abandoned', max_size=2, slot_exp=0.2)
    p.__enter__()  # a worker that dies without releasing
    time.sleep(0.35)
    assert redis_client.exists('{model-abandoned}:slots') == 0


def test_every_key_of_a_pool_shares_a_hash_tag_of_that_pool_alone() -> None:
    assert pool_keys('PYC-user-1').slots == '{PYC-user-1}:slots'
    # '}' in a key would end the tag early and merge pools; such names are tagged by digest.
    a, b = pool_keys('PYC-a}x').slots, pool_keys('PYC-a}y').slots
    assert key_slot(a.encode()) != key_slot(b.encode())
    assert a.endswith('PYC-a}x:slots')
    spread = {key_slot(pool_keys(f'PYC-user-{i}').slots.encode()) for i in range(100)}
    assert len(spread) > 90  # pools land on different cluster slots, not one node


def test_scripts_reload_after_the_server_forgets_them(cachify: Cachify, redis_client: redis.Redis) -> None:
    p = cachify.pool('flushed', max_size=1)
    with p:
        pass
    redis_client.script_flush()
    with p:
        assert p.size() == 1
    assert p.size() == 0


def test_an_acquire_resent_with_the_same_slot_id_counts_once(redis_client: redis.Redis) -> None:
    from py_cachify.scripts import source

    acquire = redis_client.register_script(source('acquire'))
    key = '{model-resent}:slots'
    try:
        keys = [key, '{model-resent}:queue', '{model-resent}:leases']
        assert acquire(keys=keys, args=['slot-a', 2, 10_000, 0, 5000]) == [1, 1, -1]
        assert acquire(keys=keys, args=['slot-a', 2, 10_000, 0, 5000]) == [2, 1, -1]
        assert redis_client.zcard(key) == 1
    finally:
        redis_client.delete(key)


def test_a_large_expired_backlog_is_purged_in_bounded_batches(cachify: Cachify, redis_client: redis.Redis) -> None:
    # 250 slots of a crashed fleet, long expired: an acquire must neither count them nor
    # stall Redis removing them all at once.
    key = '{model-backlog}:slots'
    redis_client.zadd(key, {f'dead-{i}': 1_000 + i for i in range(250)})
    p = cachify.pool('backlog', max_size=2, slot_exp=30)
    with p:
        assert p.size() == 1
        assert redis_client.zcard(key) == 250 - 100 + 1
        assert redis_client.pttl(key) > 29_000
        with p:
            assert redis_client.zcard(key) == 250 - 200 + 2
        assert p.purge() == 50
        assert redis_client.zcard(key) == 1
    assert redis_client.exists(key) == 0


# PEXPIRETIME needs Redis 7; the suite also runs on 6.2. TIME + PTTL in one script is exact
# to the millisecond (Redis may round PTTL), and -1 when the key has no TTL.
_EXPIRE_TIME = """
local pttl = redis.call('PTTL', KEYS[1])
if pttl < 0 then return pttl end
local t = redis.call('TIME')
return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + pttl
"""


def expire_time_ms(client: redis.Redis, key: str) -> int:
    """When `key` expires, in ms since the epoch by the server's clock (-1: never, -2: no key)."""
    return int(client.eval(_EXPIRE_TIME, 1, key))  # type: ignore[no-untyped-call]


def run(client: redis.Redis, call: Call) -> object:
    """One call as the Redis backend sends it: the script of its name, _lib.lua first."""
    return client.register_script(source(call.script))(keys=call.keys, args=call.args)


@pytest.mark.parametrize('max_size', [10**17, 2**63, 10**40])
def test_a_huge_max_size_acquires_and_releases(cachify: Cachify, max_size: int) -> None:
    # Lua numbers are doubles printed with %.14g: max_size - live once reached ZRANGE as
    # '1e+17', so every release failed after removing its slot and woke nobody.
    p = cachify.pool('huge', max_size=max_size, slot_exp=30)
    lease = p.acquire()
    assert p.size() == 1
    assert lease.release() is True
    assert p.size() == 0
    with p:
        assert p.size() == 1
    assert p.size() == 0


def test_slot_exp_stops_where_lua_counts_exactly_and_works_up_to_there(
    cachify: Cachify, redis_client: redis.Redis
) -> None:
    # 1e14 s once made every acquire fail: Lua printed the expiry as 1e+17. Beyond the
    # limit: refused at construction, naming it; at the limit: everything works.
    for too_long in (MAX_SECONDS * 1.01, 1e14, 2**63):
        with pytest.raises(ValueError, match=r'slot_exp must be at most 10,000,000,000 seconds'):
            cachify.pool('long', max_size=1, slot_exp=too_long)
    with cachify.pool('long', max_size=1, slot_exp=30).acquire() as lease:
        with pytest.raises(ValueError, match=r'seconds must be at most 10,000,000,000 seconds'):
            lease.extend(1e14)
    key = '{model-longest}:slots'
    p = cachify.pool('longest', max_size=1, slot_exp=MAX_SECONDS)
    with p.acquire() as lease:
        [(_, expiry)] = redis_client.zrange(key, 0, -1, withscores=True)
        assert expiry == pytest.approx(server_ms(redis_client) + MAX_SECONDS * 1000, abs=5_000)
        assert redis_client.pttl(key) > (MAX_SECONDS - 10) * 1000
        assert lease.extend(MAX_SECONDS) is True
        assert p.holders()[lease.slot] == pytest.approx(MAX_SECONDS, abs=5)
        with pytest.raises(CachifyPoolFullError):
            p.acquire()
    assert redis_client.exists(key) == 0


def test_extending_a_never_expiring_slot_to_a_lifetime_gives_the_key_a_ttl(
    cachify: Cachify, redis_client: redis.Redis
) -> None:
    key = '{model-finite}:slots'
    with cachify.pool('finite', max_size=2, slot_exp=None).acquire() as lease:
        assert redis_client.pttl(key) == -1
        assert lease.extend(30) is True
        # It used to stay -1: an abandoned pool then lived in Redis for ever.
        assert 29_000 < redis_client.pttl(key) <= 30_000
        assert lease.extend(None) is True
        assert redis_client.pttl(key) == -1


def test_no_sequence_leaves_a_finite_pool_without_ttl_or_expires_it_early(redis_client: redis.Redis) -> None:
    # The key-TTL rule, as a property: after every acquire / extend / release, a key whose
    # slots are all finite has a TTL, one with a never-expiring slot has none, and the key
    # never expires before its latest slot. Lifetimes are long: nothing expires meanwhile.
    rng = random.Random(8)
    keys = pool_keys('model-property')
    try:
        for _ in range(40):
            redis_client.delete(keys.slots)
            held: set[str] = set()
            for _ in range(rng.randrange(1, 12)):
                slot, ttl = rng.choice('abcd'), rng.choice([0, 20_000, 40_000, 60_000])
                operation = rng.choice(['acquire', 'acquire', 'extend', 'release'])
                if operation == 'acquire':
                    run(redis_client, acquire_call('model-', 'property', slot, 4, ttl))
                    held.add(slot)
                elif operation == 'extend':
                    run(redis_client, extend_call('model-', 'property', slot, ttl))
                else:
                    run(redis_client, release_call('model-', 'property', slot, 4))
                    held.discard(slot)
                scores = [score for _, score in redis_client.zrange(keys.slots, 0, -1, withscores=True)]
                assert len(scores) == len(held)
                if not scores:
                    assert redis_client.exists(keys.slots) == 0
                elif max(scores) == float('inf'):
                    assert redis_client.pttl(keys.slots) == -1
                else:
                    # At least as long as the latest slot; a release leaves it (acquire only raises it).
                    assert expire_time_ms(redis_client, keys.slots) >= max(scores) - 1
    finally:
        redis_client.delete(keys.slots)


def test_releasing_an_expired_slot_answers_not_held_and_wakes_nobody(redis_client: redis.Redis) -> None:
    keys = pool_keys('model-lapsed')
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.psubscribe(keys.channel + '*')  # the channel, and every mailbox on it
        redis_client.zadd(keys.slots, {'late': 1_000, 'live': server_ms(redis_client) + 60_000})
        redis_client.zadd(keys.leases, {'waiter': server_ms(redis_client) + 60_000})  # someone waits
        # Its expiry already freed the place: a release now is no release (Lease.release()
        # answers False), and the expired entry goes.
        assert run(redis_client, release_call('model-', 'lapsed', 'late', 1)) == 0
        assert redis_client.zrange(keys.slots, 0, -1) == [b'live']
        assert run(redis_client, release_call('model-', 'lapsed', 'live', 1)) == 1
        messages = []
        deadline = time.monotonic() + 10
        while not messages and time.monotonic() < deadline:
            if (message := pubsub.get_message(timeout=0.5)) is not None:
                messages.append(message['data'])
        assert messages == [b'waiter']  # the live one's release only, naming the waiter out of the queue
    finally:
        pubsub.close()
        redis_client.delete(*keys.__dict__.values())


def test_a_release_never_names_a_waiter_whose_queue_lease_ran_out(redis_client: redis.Redis) -> None:
    keys = pool_keys('model-gone')
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.psubscribe(keys.channel + '*')  # the channel, and every mailbox on it
        now = server_ms(redis_client)
        run(redis_client, acquire_call('model-', 'gone', 'holder', 1, 60_000))
        # 150 dead waiters ahead of a live one: more than one batch (100) of them.
        redis_client.zadd(keys.queue, {f'dead-{i:03}': i for i in range(150)} | {'alive': 1_000})
        redis_client.zadd(keys.leases, {f'dead-{i:03}': 1_000 + i for i in range(150)} | {'alive': now + 60_000})
        assert run(redis_client, release_call('model-', 'gone', 'holder', 1)) == 1
        assert redis_client.zcard(keys.queue) == 51  # one batch dropped, no more
        redis_client.zadd(keys.slots, {'holder': now + 60_000})  # held again, by a jumper of the queue
        assert run(redis_client, release_call('model-', 'gone', 'holder', 1)) == 1
        assert redis_client.zrange(keys.queue, 0, -1) == [b'alive']
        messages: list[bytes] = []
        deadline = time.monotonic() + 10
        while len(messages) < 2 and time.monotonic() < deadline:
            if (message := pubsub.get_message(timeout=0.5)) is not None:
                messages.append(message['data'])
        # The first release found a dead waiter at the head: it names nobody, any may try.
        assert messages == [b'', b'alive']
    finally:
        pubsub.close()
        redis_client.delete(*keys.__dict__.values())


def test_purge_and_holders_do_bounded_work_per_call(cachify: Cachify, redis_client: redis.Redis) -> None:
    keys = pool_keys('model-bounded')
    now = server_ms(redis_client)
    redis_client.zadd(keys.slots, {f'dead-{i:04}': 1_000 + i for i in range(2_500)})
    redis_client.zadd(keys.slots, {f'live-{i:04}': now + 60_000 + i for i in range(30)})
    assert run(redis_client, purge_call('model-', 'bounded', limit=1_000)) == 1_000
    assert run(redis_client, purge_call('model-', 'bounded')) == PURGE_BATCH
    assert redis_client.zcard(keys.slots) == 2_530 - 1_000 - PURGE_BATCH
    reply = run(redis_client, holders_call('model-', 'bounded', limit=7))
    assert isinstance(reply, list)
    assert reply[::2] == [f'live-{i:04}'.encode() for i in range(7)]  # the soonest to expire
    p = cachify.pool('bounded', max_size=100)
    assert p.purge() == 1_500 - PURGE_BATCH  # pool.purge() drains batch after batch
    assert list(p.holders(limit=3)) == [f'live-{i:04}' for i in range(3)]
    assert len(p.holders()) == 30
    for bad in (0, -1, 1.5, True, '3'):
        with pytest.raises((TypeError, ValueError), match='limit must be an int >= 1'):
            p.holders(limit=bad)  # type: ignore[arg-type]
    redis_client.delete(keys.slots)
