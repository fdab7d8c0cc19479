"""Scenarios 1, 2, 7 and 8: sequential enter+exit pairs, the round-trip floor, size() and the embedded default."""

from __future__ import annotations

import asyncio

import redis
import redis.connection
from harness import (
    FLOOR_SCRIPT,
    Config,
    Result,
    async_pair,
    async_redis,
    evalsha_floor,
    fill_via_api,
    make_pool,
    record,
    record_with_floor,
    sync_pair,
    sync_redis,
    time_async,
    time_sync,
)

from py_cachify import init_cachify

# -- 1, 2, 7, 8: sequential loops ------------------------------------------------------


def sequential(cfg: Config) -> Result:
    """1. Sequential enter+exit pairs, sync and async, timed beside the EVALSHA floor."""
    result, sha = Result(), load_floor(cfg)
    with sync_redis(cfg) as client:
        pair, floor_op = sync_pair(make_pool(cfg, 'seq-sync', 8)), evalsha_floor(client, sha)
        record_with_floor(result, time_sync({'sync': pair, 'sync.floor': floor_op}, cfg.seconds), 'sync', 2)

    async def run_async() -> None:
        async with async_redis(cfg) as client:
            apair, floor_op = async_pair(make_pool(cfg, 'seq-async', 8)), evalsha_floor(client, sha)
            timings = await time_async({'async': apair, 'async.floor': floor_op}, cfg.seconds)
            record_with_floor(result, timings, 'async', 2)

    asyncio.run(run_async())
    return result


def floor(cfg: Config) -> Result:
    """2. What Redis alone costs per round trip from the same client: PING and EVALSHA of `return 1`."""
    result, sha = Result(), load_floor(cfg)
    with sync_redis(cfg) as client:
        ops = {'sync.ping': client.ping, 'sync.evalsha': evalsha_floor(client, sha)}
        record(result, time_sync(ops, cfg.seconds))

    async def run_async() -> None:
        async with async_redis(cfg) as client:
            aops = {'async.ping': client.ping, 'async.evalsha': evalsha_floor(client, sha)}
            record(result, await time_async(aops, cfg.seconds))

    asyncio.run(run_async())
    return result


def load_floor(cfg: Config) -> str:
    """Load the floor's script; the script cache is server-wide, so its sha serves every client."""
    with redis.Redis.from_url(cfg.url) as client:
        return str(client.script_load(FLOOR_SCRIPT))


def size(cfg: Config) -> Result:
    """7. size() calls per second on a pool holding 100 live slots, timed beside the EVALSHA floor."""
    result, sha = Result(), load_floor(cfg)
    with sync_redis(cfg) as client:
        p = make_pool(cfg, 'size', 200, slot_exp=None)
        fill_via_api(p, 100)
        timings = time_sync({'sync': p.size, 'sync.floor': evalsha_floor(client, sha)}, cfg.seconds)
        record_with_floor(result, timings, 'sync', 1)
        result.info['live_slots'] = p.size()

    async def run_async() -> None:
        async with async_redis(cfg) as client:
            ops = {'async': p.asize, 'async.floor': evalsha_floor(client, sha)}
            record_with_floor(result, await time_async(ops, cfg.seconds), 'async', 1)

    asyncio.run(run_async())
    return result


def embedded(cfg: Config) -> Result:
    """8. The default with no client at all: ours' embedded store vs py-cachify's MemoryCache."""
    result = Result()
    init_cachify()
    record(result, time_sync({'sync': sync_pair(make_pool(cfg, 'emb-sync', 8))}, cfg.seconds))

    async def run_async() -> None:
        record(result, await time_async({'async': async_pair(make_pool(cfg, 'emb-async', 8))}, cfg.seconds))

    asyncio.run(run_async())
    return result
