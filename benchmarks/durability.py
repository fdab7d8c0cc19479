"""What the durability option costs per acquire: `replicas=0` (off) against `replicas=1`.

    python -m benchmarks.durability                 # prints a table, writes benchmarks/results-durability.json
    python -m benchmarks.durability --cycles 500 --rounds 3 --json out.json

Starts a master and one replica of its own (redis-server on free loopback ports,
persistence off), and times enter/exit cycles of one pool, sync and asyncio, with each
setting, interleaved round by round (A B A B) so the machine's noise falls on both. A
durable acquire is still one round trip (EVALSHA and WAIT pipelined), but WAIT answers
only once the replica has acknowledged the write: the extra cost is the replica's
acknowledgement, over loopback here. Over a network, add one replica round trip.
Figures are medians over rounds of each round's median / p99 acquire time and cycles/s.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `python benchmarks/durability.py` puts benchmarks/, not the repo, on the path

import redis  # noqa: E402
import redis.asyncio  # noqa: E402

from py_cachify import init_cachify  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

SETTINGS = {'replicas=0': 0, 'replicas=1': 1}


def _cycles_sync(cachify: Any, replicas: int, cycles: int, key: str) -> dict[str, float]:
    pool = cachify.pool(key, max_size=1, replicas=replicas, replica_timeout=1.0)
    times = []
    started = time.perf_counter()
    for _ in range(cycles):
        t0 = time.perf_counter()
        lease = pool.acquire()
        times.append(time.perf_counter() - t0)
        lease.release()
    return _figures(times, time.perf_counter() - started)


async def _cycles_async(cachify: Any, replicas: int, cycles: int, key: str) -> dict[str, float]:
    pool = cachify.pool(key, max_size=1, replicas=replicas, replica_timeout=1.0)
    times = []
    started = time.perf_counter()
    for _ in range(cycles):
        t0 = time.perf_counter()
        lease = await pool.aacquire()
        times.append(time.perf_counter() - t0)
        await lease.arelease()
    return _figures(times, time.perf_counter() - started)


def _figures(times: list[float], elapsed: float) -> dict[str, float]:
    times.sort()
    return {
        'acquire_p50_us': times[len(times) // 2] * 1e6,
        'acquire_p99_us': times[min(len(times) - 1, int(len(times) * 0.99))] * 1e6,
        'cycles_per_s': len(times) / elapsed,
    }


def measure(master_port: int, cycles: int, rounds: int) -> dict[str, dict[str, list[dict[str, float]]]]:
    sync_client = redis.Redis(port=master_port)
    async_client = redis.asyncio.Redis(port=master_port)
    cachify = init_cachify(sync_client, async_client, prefix='bench-durable-', is_global=False)
    runs: dict[str, dict[str, list[dict[str, float]]]] = {api: {s: [] for s in SETTINGS} for api in ('sync', 'async')}
    try:
        for round_no in range(rounds):
            for name, replicas in SETTINGS.items():
                key = f'{name}-{round_no}'
                runs['sync'][name].append(_cycles_sync(cachify, replicas, cycles, key))

                async def one(replicas: int = replicas, key: str = key) -> dict[str, float]:
                    return await _cycles_async(cachify, replicas, cycles, key)

                runs['async'][name].append(asyncio.run(one()))
    finally:
        cachify.close()
        sync_client.close()

        async def shut() -> None:
            await async_client.aclose()

        asyncio.run(shut())
    return runs


def summary(runs: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, dict[str, dict[str, float]]]:
    return {
        api: {name: {k: statistics.median(r[k] for r in rounds) for k in rounds[0]} for name, rounds in by.items()}
        for api, by in runs.items()
    }


def render(medians: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        '| API | setting | acquire p50 (µs) | acquire p99 (µs) | enter/exit cycles/s | p50 cost of durability |',
        '| --- | --- | ---: | ---: | ---: | ---: |',
    ]
    for api, by in medians.items():
        base = by['replicas=0']['acquire_p50_us']
        for name, figures in by.items():
            extra = '' if name == 'replicas=0' else f'+{figures["acquire_p50_us"] - base:.0f} µs'
            lines.append(
                f'| {api} | {name} | {figures["acquire_p50_us"]:.0f} | {figures["acquire_p99_us"]:.0f} '
                f'| {figures["cycles_per_s"]:,.0f} | {extra} |'
            )
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--cycles', type=int, default=2000, help='enter/exit cycles per round and setting')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--json', type=Path, default=REPO / 'benchmarks' / 'results-durability.json')
    args = parser.parse_args(argv)
    with RedisServer() as master:
        replica = RedisServer('--replicaof', '127.0.0.1', str(master.port)).start()
        try:
            with redis.Redis(port=replica.port) as client:
                deadline = time.monotonic() + 30
                while client.info('replication').get('master_link_status') != 'up':
                    if time.monotonic() > deadline:
                        raise RuntimeError('the replica did not sync within 30 s')
                    time.sleep(0.05)
            runs = measure(master.port, args.cycles, args.rounds)
        finally:
            replica.__exit__()
    medians = summary(runs)
    print(render(medians))
    args.json.write_text(
        json.dumps(
            {
                'when': datetime.datetime.now(datetime.timezone.utc).isoformat(),
                'machine': {'python': platform.python_version(), 'platform': platform.platform()},
                'cycles': args.cycles,
                'rounds': args.rounds,
                'medians': medians,
                'runs': runs,
            },
            indent=2,
        )
    )
    print(f'\nwritten to {args.json}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
