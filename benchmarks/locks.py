"""Locks and `cached`, ours against py-cachify 3.1.0, interleaved, one table and a JSON file.

    python -m benchmarks.locks                          # 5 rounds per side, about 2 minutes
    python -m benchmarks.locks --quick --json out.json  # 1 short round, to check it works

Like `python -m benchmarks` (see benchmarks/README.md), it starts its own redis-server on a
free loopback port, runs every scenario in a fresh process of each side's interpreter (ours:
this checkout's src/; the baseline: the py-cachify 3.1.0 virtualenv of benchmarks/baseline.py),
rounds interleaved A B A B, and reports medians. The same file is the scenario script
(`--scenario`), so both sides run exactly the same code; requests are counted on the wire
with harness.py's `WireCounter` (the pool scenarios' counter).

Scenarios:
  lock       enter+exit pairs of an uncontended `lock` (sync and async): pairs/s, requests per pair
  cached     calls of a `cached` function that hit (sync and async): calls/s, requests per hit
  stampede   100 concurrent misses on one key (asyncio tasks, then threads): computations
  handover   a lock released while another thread waits for it (nowait=False): ms until the
             waiter holds it; each side with its default lock_poll_interval (0.1 s)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SCENARIOS = ('lock', 'cached', 'stampede', 'handover')
STAMPEDE = 100
HAND_OVERS = 40  # 2 warm-up, 38 timed


# -- scenarios: run in the side's own interpreter -------------------------------------------


def _timed(op: Callable[[], object], seconds: float) -> float:
    for _ in range(50):  # connects, loads scripts
        op()
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(100):
            op()
        calls += 100
    return calls / elapsed


async def _atimed(op: Callable[[], Awaitable[object]], seconds: float) -> float:
    for _ in range(50):
        await op()
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(100):
            await op()
        calls += 100
    return calls / elapsed


def _requests(counter: Any, op: Callable[[], object], calls: int = 1000) -> float:
    with counter.counting():
        for _ in range(calls):
            op()
    return float(sum(counter.commands.values())) / calls


async def _arequests(counter: Any, op: Callable[[], Awaitable[object]], calls: int = 1000) -> float:
    with counter.counting():
        for _ in range(calls):
            await op()
    return float(sum(counter.commands.values())) / calls


def scenario_lock(url: str, quick: bool, run: str, counter: Any) -> dict[str, float]:
    import redis
    import redis.asyncio

    from py_cachify import init_cachify, lock

    init_cachify(redis.Redis.from_url(url), redis.asyncio.Redis.from_url(url))
    seconds = 0.3 if quick else 2.0
    key = f'bench-lock-{run}'

    def pair() -> None:
        with lock(key):
            pass

    async def apair() -> None:
        async with lock(key):
            pass

    async def both() -> tuple[float, float]:
        return await _atimed(apair, seconds), await _arequests(counter, apair)

    sync_rate, sync_requests = _timed(pair, seconds), _requests(counter, pair)
    async_rate, async_requests = asyncio.run(both())
    return {
        'lock.sync.pairs_per_s': sync_rate,
        'lock.sync.requests_per_pair': sync_requests,
        'lock.async.pairs_per_s': async_rate,
        'lock.async.requests_per_pair': async_requests,
    }


def scenario_cached(url: str, quick: bool, run: str, counter: Any) -> dict[str, float]:
    import redis
    import redis.asyncio

    from py_cachify import cached, init_cachify

    init_cachify(redis.Redis.from_url(url), redis.asyncio.Redis.from_url(url))
    seconds = 0.3 if quick else 2.0

    @cached(f'bench-hit-{run}', ttl=600)
    def hit() -> dict[str, int]:
        return {'answer': 42}

    @cached(f'bench-ahit-{run}', ttl=600)
    async def ahit() -> dict[str, int]:
        return {'answer': 42}

    async def both() -> tuple[float, float]:
        return await _atimed(ahit, seconds), await _arequests(counter, ahit)

    sync_rate, sync_requests = _timed(hit, seconds), _requests(counter, hit)
    async_rate, async_requests = asyncio.run(both())
    return {
        'cached.sync.hits_per_s': sync_rate,
        'cached.sync.requests_per_hit': sync_requests,
        'cached.async.hits_per_s': async_rate,
        'cached.async.requests_per_hit': async_requests,
    }


def scenario_stampede(url: str, quick: bool, run: str, counter: Any) -> dict[str, float]:
    import redis
    import redis.asyncio

    from py_cachify import cached, init_cachify

    init_cachify(redis.Redis.from_url(url), redis.asyncio.Redis.from_url(url))
    computed = {'tasks': 0, 'threads': 0}
    lock = threading.Lock()

    @cached(f'bench-stampede-tasks-{run}', ttl=600)
    async def by_tasks() -> int:
        computed['tasks'] += 1
        await asyncio.sleep(0.1)  # a query of 100 ms
        return 1

    @cached(f'bench-stampede-threads-{run}', ttl=600)
    def by_threads() -> int:
        with lock:
            computed['threads'] += 1
        time.sleep(0.1)
        return 1

    async def tasks() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(by_tasks() for _ in range(STAMPEDE)))
        return time.perf_counter() - started

    tasks_s = asyncio.run(tasks())
    start = threading.Barrier(STAMPEDE)

    def thread() -> None:
        start.wait()
        by_threads()

    threads = [threading.Thread(target=thread) for _ in range(STAMPEDE)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    threads_s = time.perf_counter() - started
    return {
        'stampede.tasks.computations': computed['tasks'],
        'stampede.tasks.all_answered_ms': tasks_s * 1000,
        'stampede.threads.computations': computed['threads'],
        'stampede.threads.all_answered_ms': threads_s * 1000,
    }


def scenario_handover(url: str, quick: bool, run: str, counter: Any) -> dict[str, float]:
    import redis

    from py_cachify import init_cachify, lock

    init_cachify(redis.Redis.from_url(url))
    key = f'bench-handover-{run}'
    rng = random.Random(7)  # the same holds on both sides
    rounds = 6 if quick else HAND_OVERS
    latencies: list[float] = []
    for i in range(rounds):
        holder = lock(key, exp=60)
        holder.__enter__()
        entered: list[int] = []
        waiting = threading.Event()
        thread = threading.Thread(target=_wait_for, args=(lock, key, waiting, entered))
        thread.start()
        waiting.wait()
        time.sleep(0.002 + rng.random() * 0.1)  # the release lands anywhere in a 0.1 s poll cycle
        holder.__exit__(None, None, None)
        released = time.monotonic_ns()
        thread.join()
        if i >= 2:
            latencies.append((entered[0] - released) / 1e6)
    latencies.sort()
    return {
        'handover.p50_ms': statistics.median(latencies),
        'handover.p99_ms': latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        'handover.mean_ms': statistics.fmean(latencies),
    }


def _wait_for(lock: Any, key: str, waiting: threading.Event, entered: list[int]) -> None:
    waiting.set()
    with lock(key, nowait=False, timeout=30):
        entered.append(time.monotonic_ns())


def run_scenario(name: str, url: str, quick: bool) -> None:
    sys.path.insert(0, str(BENCH))
    from harness import WireCounter, identity  # the pool benchmarks' counter and self-check

    counter = WireCounter()
    counter.install()
    metrics = globals()[f'scenario_{name}'](url, quick, uuid.uuid4().hex[:10], counter)
    print(json.dumps({'metrics': metrics, 'identity': identity()}))


# -- the runner: both sides, interleaved ---------------------------------------------------------

ROWS = [
    ('lock.sync.pairs_per_s', 'Lock enter+exit, sync', 'pairs/s', True),
    ('lock.sync.requests_per_pair', 'Requests per lock enter+exit, sync', 'requests', False),
    ('lock.async.pairs_per_s', 'Lock enter+exit, async', 'pairs/s', True),
    ('lock.async.requests_per_pair', 'Requests per lock enter+exit, async', 'requests', False),
    ('cached.sync.hits_per_s', 'cached hit, sync', 'calls/s', True),
    ('cached.sync.requests_per_hit', 'Requests per cached hit, sync', 'requests', False),
    ('cached.async.hits_per_s', 'cached hit, async', 'calls/s', True),
    ('cached.async.requests_per_hit', 'Requests per cached hit, async', 'requests', False),
    ('stampede.tasks.computations', f'Stampede, {STAMPEDE} tasks miss one key: computations', 'calls', False),
    ('stampede.tasks.all_answered_ms', 'Stampede, tasks: all answered after', 'ms', False),
    ('stampede.threads.computations', f'Stampede, {STAMPEDE} threads miss one key: computations', 'calls', False),
    ('stampede.threads.all_answered_ms', 'Stampede, threads: all answered after', 'ms', False),
    ('handover.p50_ms', 'Lock hand-over to a waiting thread: p50', 'ms', False),
    ('handover.p99_ms', 'Lock hand-over to a waiting thread: p99', 'ms', False),
    ('handover.mean_ms', 'Lock hand-over to a waiting thread: mean', 'ms', False),
]


def _side_run(python: str, env: dict[str, str], scenario: str, url: str, quick: bool) -> dict[str, Any]:
    command = [python, str(Path(__file__).resolve()), '--scenario', scenario, '--redis-url', url]
    if quick:
        command.append('--quick')
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f'{scenario} failed: {done.stderr.strip()[-2000:]}')
    output: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--scenario', choices=SCENARIOS, help='run one scenario here and print its JSON line')
    parser.add_argument('--redis-url')
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--json', type=Path, help='also write every figure and round here')
    parser.add_argument('--no-baseline', action='store_true')
    args = parser.parse_args()
    if args.scenario:
        run_scenario(args.scenario, args.redis_url, args.quick)
        return

    sys.path.insert(0, str(REPO))
    from benchmarks.baseline import BASELINE
    from benchmarks.run import check_identity, ours_side
    from benchmarks.servers import RedisServer

    sides = [ours_side()]
    if not args.no_baseline:
        from benchmarks.run import baseline_side

        sides.append(baseline_side())
    rounds = 1 if args.quick else args.rounds
    runs: dict[str, dict[str, list[float]]] = {side.name: {} for side in sides}
    started = time.time()
    with RedisServer() as server:
        for scenario in SCENARIOS:
            for round_no in range(rounds):
                for side in sides:  # A B A B
                    out = _side_run(side.python, side.env, scenario, server.url, args.quick)
                    check_identity(side, out['identity'])
                    for name, value in out['metrics'].items():
                        runs[side.name].setdefault(name, []).append(value)
                    print(f'{scenario} round {round_no + 1} {side.name}: ok', file=sys.stderr)
    medians = {side: {k: statistics.median(v) for k, v in figures.items()} for side, figures in runs.items()}
    lines = [
        f'| Figure | Unit | ours | {BASELINE} | ours vs 3.1.0 |',
        '| --- | --- | ---: | ---: | ---: |',
    ]
    for key, label, unit, higher_better in ROWS:
        ours = medians['ours'].get(key)
        base = medians.get('baseline', {}).get(key)
        ratio = ''
        if ours and base:
            ratio = f'{(ours / base if higher_better else base / ours):.2f}x'
        lines.append(f'| {label} | {unit} | {_fmt(ours)} | {_fmt(base)} | {ratio} |')
    table = '\n'.join(lines)
    print(f'Medians of {rounds} round(s) per side, interleaved; {time.time() - started:.0f} s.\n')
    print(table)
    if args.json:
        args.json.write_text(json.dumps({'medians': medians, 'rounds': runs, 'table': table}, indent=2))


def _fmt(value: float | None) -> str:
    if value is None:
        return 'N/A'
    if value >= 1000:
        return f'{value:,.0f}'
    return f'{value:.3g}'


if __name__ == '__main__':
    main()
