"""What a pool leaves in Redis: one sorted set per pool, Redis's clock, nothing left behind."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot

from py_cachify import Cachify, init_cachify
from py_cachify.ops import pool_keys


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
        # A short random hex id and a number: no pickle, nothing else.
        assert len(slot) == 16
        int(slot, 16)
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
