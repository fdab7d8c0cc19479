"""Scenario 3: requests and round trips the client sends per pair and per size(), and what Redis ran."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from harness import (
    Config,
    Result,
    WireCounter,
    async_pair,
    async_redis,
    count_async,
    count_sync,
    make_pool,
    server_delta,
    sync_pair,
    sync_redis,
)

# -- 3: requests the client sends ------------------------------------------------------


def server_cost(result: Result, url: str, op: Callable[[], object], calls: int) -> None:
    """Commands Redis executed (scripts' inner commands included) and server CPU, per call.

    Only meaningful on a server nobody else is using.
    """
    with server_delta(url) as delta:
        for _ in range(calls):
            op()
    result.metrics['sync.pair.server_commands'] = delta['commands'] / calls
    result.metrics['sync.pair.server_cpu_us'] = delta['cpu_us'] / calls


def requests(cfg: Config) -> Result:
    """3. Requests and round trips the client sends per enter+exit pair and per size()."""
    result = Result()
    counter = WireCounter()
    counter.install()
    calls = 50 if cfg.quick else 1000
    with sync_redis(cfg):
        p = make_pool(cfg, 'requests-sync', 8)
        count_sync(result, 'sync.pair', counter, sync_pair(p), calls)
        count_sync(result, 'sync.size', counter, p.size, calls)
        server_cost(result, cfg.url, sync_pair(p), calls)

    async def run_async() -> None:
        async with async_redis(cfg):
            p = make_pool(cfg, 'requests-async', 8)
            await count_async(result, 'async.pair', counter, async_pair(p), calls)
            await count_async(result, 'async.size', counter, p.asize, calls)

    asyncio.run(run_async())
    return result
