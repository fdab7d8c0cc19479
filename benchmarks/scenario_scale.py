"""Scenario 6: acquire latency and memory per slot as pools grow, and after an expired backlog."""

from __future__ import annotations

import math
import time

import redis
import redis.connection
from harness import (
    Config,
    Result,
    fill_via_api,
    make_pool,
    memory_usage,
    percentile,
    storage_keys,
    sync_pair,
    sync_redis,
)

from py_cachify import pool

# Scale (scenario 6). Pools this size are filled through the public API on both sides.
API_FILL_LIMIT = 1000


# -- 6: scale --------------------------------------------------------------------------


def fill_via_zadd(client: redis.Redis, cfg: Config, name: str, n: int, score: float) -> None:
    """Ours only: write `n` slots as acquire.lua would (ids from new_slot_id, expiry ms as score), fast."""
    from py_cachify.ops import new_slot_id  # ours only: 3.1.0 has no ops module

    rkey = storage_keys(cfg, name)[0]
    for start in range(0, n, 10_000):
        client.zadd(rkey, {new_slot_id(): score for _ in range(min(10_000, n - start))})


def time_acquires(p: pool, samples: int) -> list[int]:
    """Latency of `__enter__` alone; each slot is given back (untimed) before the next."""
    p.__enter__()
    p.__exit__(None, None, None)
    durations = []
    for _ in range(samples):
        start = time.perf_counter_ns()
        p.__enter__()
        durations.append(time.perf_counter_ns() - start)
        p.__exit__(None, None, None)
    return durations


def scale_live(cfg: Config, client: redis.Redis, result: Result, n: int, samples: int) -> None:
    name = f'live{n}'
    if n > API_FILL_LIMIT and cfg.side != 'ours':
        reason = 'not feasible: filling through the public API re-pickles the whole pool per slot, O(n^2)'
        for metric in ('acquire_p50_us', 'acquire_p99_us', 'bytes_per_slot'):
            result.na[f'{name}.{metric}'] = reason
        return
    cap = n + samples + 10
    if n > API_FILL_LIMIT:
        fill_via_zadd(client, cfg, name, n, math.inf)
        result.info[f'{name}.filled_by'] = 'ZADD'
    else:
        fill_via_api(make_pool(cfg, name, cap, slot_exp=None), n)
        result.info[f'{name}.filled_by'] = 'api'
    p = make_pool(cfg, name, cap)
    live = p.size()
    if live != n:  # a layout mismatch would measure the wrong key: refuse rather than report it
        raise RuntimeError(f'{name}: pool reports {live} live slots after filling {n}')
    result.metrics[f'{name}.bytes_per_slot'] = memory_usage(client, storage_keys(cfg, name)) / n
    durations = time_acquires(p, samples)
    result.metrics[f'{name}.acquire_p50_us'] = percentile(durations, 0.50) / 1000
    result.metrics[f'{name}.acquire_p99_us'] = percentile(durations, 0.99) / 1000


def fill_backlog(cfg: Config, client: redis.Redis, name: str, n: int) -> float:
    """One live slot that keeps the pool alive plus `n` that expire; returns when they all have."""
    cap = n + 10
    fill_via_api(make_pool(cfg, name, cap, slot_exp=None), 1)
    if n > API_FILL_LIMIT:
        fill_via_zadd(client, cfg, name, n, time.time() * 1000 - 60_000)
        return time.time()
    short = make_pool(cfg, name, cap, slot_exp=cfg.backlog_exp_s)
    start = time.monotonic()
    fill_via_api(short, n)
    # Each acquire purges what has expired: a fill slower than the slot lifetime shrinks its backlog.
    if time.monotonic() - start >= cfg.backlog_exp_s:
        raise RuntimeError(f'{name}: filling {n} slots took longer than their {cfg.backlog_exp_s} s lifetime')
    return time.time() + cfg.backlog_exp_s


def scale_backlog(cfg: Config, client: redis.Redis, result: Result, n: int, samples: int) -> None:
    """Latency of the first acquire after `n` slots expired.

    3.1.0 drops them all in that acquire; ours' acquire.lua drops at most 100 per call.
    """
    metric = f'expired{n}.acquire_us'
    if n > API_FILL_LIMIT and cfg.side != 'ours':
        result.na[metric] = 'not feasible: filling through the public API re-pickles the whole pool per slot, O(n^2)'
        return
    names = [f'expired{n}-{i}' for i in range(samples)]
    ready_at = max(fill_backlog(cfg, client, name, n) for name in names)
    time.sleep(max(0.0, ready_at - time.time() + 0.1))
    durations = []
    warm = sync_pair(make_pool(cfg, 'warm', 1))
    for name in names:
        p = make_pool(cfg, name, n + 10)
        warm()  # the same code path on another pool: after the idle wait, the first call ran 8x slower
        start = time.perf_counter_ns()
        p.__enter__()
        durations.append(time.perf_counter_ns() - start)
        if p.size() != 2:  # the keeper and the new slot: no expired slot counts as live
            raise RuntimeError(f'{name}: {p.size()} live slots after the backlog expired')
        p.__exit__(None, None, None)
    result.metrics[metric] = percentile(durations, 0.50) / 1000
    result.info[f'expired{n}.samples_us'] = [d / 1000 for d in durations]


def scale(cfg: Config) -> Result:
    """6. Acquire latency with many live slots and after a backlog of expired ones; memory per slot."""
    result = Result()
    live_sizes = (10, 1000) if cfg.quick else (10, 1000, 100_000)
    backlogs = (100,) if cfg.quick else (1000, 100_000)
    samples = 20 if cfg.quick else 200
    with sync_redis(cfg) as client:
        for n in live_sizes:
            scale_live(cfg, client, result, n, samples)
        for n in backlogs:
            scale_backlog(cfg, client, result, n, 2 if cfg.quick else 5)
    return result
