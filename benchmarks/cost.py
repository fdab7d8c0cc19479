"""What one enter+exit pair costs Redis, script by script, against a bare EVALSHA (issue 11).

    python -m benchmarks.cost                       # starts its own redis-server, about 20 s
    python -m benchmarks.cost --quick --json out.json

Ours only: py-cachify 3.1.0 runs no scripts, so there is nothing of its to set beside a
per-script figure (its memory per slot is in the main run's scale rows). Every figure is
from a dedicated server (the runner's own unless --redis-url is given):

- *Redis CPU* is the `usec` delta of `INFO commandstats` for EVALSHA, which includes the
  commands a script runs, per call of each script; "x bare" divides it by the same delta
  for an EVALSHA of `return 1`, timed in alternating batches with it so that a loaded
  machine inflates both alike. Medians over the batches.
- *of floor* is pairs/s over half the bare EVALSHA calls/s of the same client, timed in
  alternating 50 ms slices (a pair needs two round trips at best).
- *growth* is the Redis CPU of a pair on a pool of 100,000 live slots over one of 10.
- *bytes per live slot* is `MEMORY USAGE ... SAMPLES 0` of the slots key over 1,000 slots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / 'src'):  # `python benchmarks/cost.py` and an uninstalled checkout both work
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import redis  # noqa: E402
import redis.asyncio as aredis  # noqa: E402

from py_cachify import init_cachify, pool  # noqa: E402
from py_cachify.ops import Call, acquire_call, new_slot_id, pool_keys, release_call  # noqa: E402
from py_cachify.scripts import source  # noqa: E402

__all__ = ['main', 'measure']

PREFIX = 'PYC-'
FLOOR_SCRIPT = 'return 1'
SLICE_S = 0.05


def evalsha_usec(client: redis.Redis) -> tuple[int, int]:
    """(calls, usec) of EVALSHA so far: the commands a script runs are inside its usec."""
    stats: dict[str, Any] = client.info('commandstats')
    row = stats.get('cmdstat_evalsha', {'calls': 0, 'usec': 0})
    return int(row['calls']), int(row['usec'])


def server_usec(client: redis.Redis, work: Callable[[], object]) -> float:
    """Redis CPU (µs of EVALSHA) per script call that `work` makes."""
    calls0, usec0 = evalsha_usec(client)
    work()
    calls1, usec1 = evalsha_usec(client)
    return (usec1 - usec0) / max(1, calls1 - calls0)


def script_costs(client: redis.Redis, name: str, live: int, batches: int, batch: int) -> dict[str, float]:
    """Redis CPU per acquire, per release and per bare EVALSHA, with `live` other slots held."""
    sha = client.script_load(FLOOR_SCRIPT)
    p = pool(name, live + batch)
    held = [p.acquire() for _ in range(live)]
    taken: list[Any] = []
    acquire, release, bare = [], [], []
    try:
        for _ in range(batches):
            bare.append(server_usec(client, lambda: [client.evalsha(sha, 0) for _ in range(batch)]))
            acquire.append(server_usec(client, lambda: taken.extend(p.acquire() for _ in range(batch))))
            release.append(server_usec(client, lambda: [taken.pop().release() for _ in range(batch)]))
    finally:
        for lease in held + taken:
            lease.release()
    # Medians, and the best batch: the usec are wall-clock inside Redis, so a preempted
    # server (a loaded machine) inflates them, and the least preempted batch is the cost.
    out: dict[str, float] = {}
    for stat, pick in (('', statistics.median), ('best_', min)):
        out[f'{stat}acquire_us'], out[f'{stat}release_us'] = pick(acquire), pick(release)
        out[f'{stat}bare_us'] = pick(bare)
        out[f'{stat}pair_us'] = out[f'{stat}acquire_us'] + out[f'{stat}release_us']
        out[f'{stat}pair_x_bare'] = out[f'{stat}pair_us'] / out[f'{stat}bare_us']
    return out


def rates_sync(client: redis.Redis, p: pool, seconds: float) -> dict[str, float]:
    sha = client.script_load(FLOOR_SCRIPT)

    def pair() -> None:
        with p:
            pass

    acquire, release = client.register_script(source('acquire')), client.register_script(source('release'))

    def scripts() -> None:
        take, give = script_calls(p)
        acquire(keys=take.keys, args=take.args)
        release(keys=give.keys, args=give.args)

    ops: dict[str, Callable[[], object]] = {'pair': pair, 'scripts': scripts, 'bare': lambda: client.evalsha(sha, 0)}
    counts, spent = dict.fromkeys(ops, 0), dict.fromkeys(ops, 0.0)
    for _ in range(50):
        pair()
    for _ in range(max(1, round(seconds / SLICE_S / 2))):
        for name, op in ops.items():
            start = now = time.perf_counter()
            while now - start < SLICE_S:
                op()
                counts[name] += 1
                now = time.perf_counter()
            spent[name] += now - start
    return of_floor(counts, spent)


async def rates_async(url: str, p: pool, seconds: float) -> dict[str, float]:
    client = aredis.Redis.from_url(url)
    try:
        sha = await client.script_load(FLOOR_SCRIPT)

        async def pair() -> None:
            async with p:
                pass

        acquire, release = client.register_script(source('acquire')), client.register_script(source('release'))

        async def scripts() -> None:
            take, give = script_calls(p)
            await acquire(keys=take.keys, args=take.args)
            await release(keys=give.keys, args=give.args)

        ops: dict[str, Callable[[], Awaitable[object]]] = {
            'pair': pair,
            'scripts': scripts,
            'bare': lambda: client.evalsha(sha, 0),
        }
        counts, spent = dict.fromkeys(ops, 0), dict.fromkeys(ops, 0.0)
        for _ in range(50):
            await pair()
        for _ in range(max(1, round(seconds / SLICE_S / 2))):
            for name, op in ops.items():
                start = now = time.perf_counter()
                while now - start < SLICE_S:
                    await op()
                    counts[name] += 1
                    now = time.perf_counter()
                spent[name] += now - start
        return of_floor(counts, spent)
    finally:
        await client.aclose()


def script_calls(p: pool) -> tuple[Call, Call]:
    """The two script calls of a pair on `p`, as the pool builds them: the scripts without the pool's Python."""
    slot = new_slot_id()
    return acquire_call(PREFIX, p.key, slot, p.max_size, 600_000), release_call(PREFIX, p.key, slot, p.max_size)


def of_floor(counts: dict[str, int], spent: dict[str, float]) -> dict[str, float]:
    rate = {name: counts[name] / spent[name] for name in counts}
    return {
        'pairs_per_s': rate['pair'],
        'scripts_per_s': rate['scripts'],
        'bare_per_s': rate['bare'],
        'of_floor': rate['pair'] / (rate['bare'] / 2),
        'scripts_of_floor': rate['scripts'] / (rate['bare'] / 2),
    }


def fill(client: redis.Redis, name: str, n: int) -> None:
    """`n` never-expiring live slots, written as acquire.lua writes them (ids from new_slot_id)."""
    slots = pool_keys(PREFIX + name).slots
    for start in range(0, n, 10_000):
        client.zadd(slots, {new_slot_id(): 'inf' for _ in range(min(10_000, n - start))})


def sync_pairs(p: pool, n: int) -> None:
    for _ in range(n):
        with p:
            pass


def growth(client: redis.Redis, batches: int, batch: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for live in (10, 100_000):
        name = f'cost-growth-{live}'
        fill(client, name, live)
        p = pool(name, live + batch)
        pairs = [server_usec(client, lambda p=p: sync_pairs(p, batch)) * 2 for _ in range(batches)]
        out[f'live{live}.pair_us'] = statistics.median(pairs)
        client.delete(*pool_keys(PREFIX + name).__dict__.values())
    out['growth_x'] = out['live100000.pair_us'] / out['live10.pair_us']
    return out


def memory(client: redis.Redis, n: int) -> dict[str, Any]:
    p = pool('cost-memory', n)
    held = [p.acquire() for _ in range(n)]
    try:
        slots = pool_keys(PREFIX + 'cost-memory').slots
        used = client.memory_usage(slots, samples=0) or 0
        encoding = client.object('encoding', slots)
        return {'bytes_per_slot': used / n, 'encoding': encoding.decode() if isinstance(encoding, bytes) else encoding}
    finally:
        for lease in held:
            lease.release()


def scale_worker(url: str, name: str, seconds: float, start: Any, done: Any) -> None:
    """One process of the scale step: enter and exit `name` (64 slots) back to back for `seconds`."""
    client = redis.Redis.from_url(url)
    init_cachify(sync_client=client)
    p = pool(name, 64)
    for _ in range(20):  # connect and load the scripts before the clock starts
        with p:
            pass
    start.wait()
    n, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        with p:
            pass
        n += 1
    done.put(n)
    client.close()


def scale(url: str, client: redis.Redis, counts: tuple[int, ...], seconds: float) -> dict[str, Any]:
    """N processes, on one shared pool of 64 and on a pool each: enters/s and Redis CPU per pair."""
    ctx = multiprocessing.get_context('spawn')
    out: dict[str, Any] = {}
    for shared in (True, False):
        for n in counts:
            start, done = ctx.Barrier(n + 1), ctx.Queue()
            names = ['cost-scale'] * n if shared else [f'cost-scale-{i}' for i in range(n)]
            workers = [ctx.Process(target=scale_worker, args=(url, name, seconds, start, done)) for name in names]
            for worker in workers:
                worker.start()
            try:
                start.wait(timeout=60)
                calls0, usec0 = evalsha_usec(client)
                began = time.perf_counter()
                enters = sum(done.get(timeout=seconds + 60) for _ in workers)
                took = time.perf_counter() - began
                calls1, usec1 = evalsha_usec(client)
            finally:
                for worker in workers:
                    worker.join(timeout=30)
                    if worker.is_alive():
                        worker.kill()
            pair_us = 2 * (usec1 - usec0) / max(1, calls1 - calls0)
            out[f'{"shared" if shared else "distinct"}.{n}'] = {
                'enters_per_s': enters / took,
                'pair_us': pair_us,
                'ceiling_pairs_per_s': 1e6 / pair_us if pair_us else None,
            }
    return out


def measure(url: str, quick: bool) -> dict[str, Any]:
    """Every figure of this module, on the Redis at `url` (it should be idle and ours)."""
    batches, batch = (5, 10) if quick else (40, 10)
    client = redis.Redis.from_url(url)
    init_cachify(sync_client=client, async_client=aredis.Redis.from_url(url))
    try:
        results: dict[str, Any] = {'quick': quick, 'batches': batches, 'batch': batch}
        results['uncontended'] = script_costs(client, 'cost-idle', 0, batches, batch)
        results['live100'] = script_costs(client, 'cost-live', 100, batches, batch)
        seconds = 0.3 if quick else 3.0
        results['sync'] = rates_sync(client, pool('cost-rate', 64), seconds)
        results['async'] = asyncio.run(rates_async(url, pool('cost-rate-async', 64), seconds))
        results['growth'] = growth(client, batches, batch)
        results['memory'] = memory(client, 1000)
        results['scale'] = scale(url, client, (1, 2) if quick else (1, 2, 4, 8), 0.3 if quick else 3.0)
        results['seconds_timed'] = seconds
        return results
    finally:
        client.close()


def render(results: dict[str, Any]) -> str:
    label = ' (--quick: few batches, short slices; checks that it works, proves nothing)' if results['quick'] else ''
    batches = f'medians of {results["batches"]} batches of {results["batch"]} calls'
    rows = [
        f'Redis CPU per call, INFO commandstats EVALSHA usec, {batches}{label}',
        '',
        '| Figure | uncontended | 100 live slots |',
        '| --- | ---: | ---: |',
    ]
    idle, live = results['uncontended'], results['live100']
    for stat, which in (('', 'median'), ('best_', 'best batch')):
        for key, title in (
            ('acquire_us', 'acquire.lua, µs'),
            ('release_us', 'release.lua, µs'),
            ('pair_us', 'enter+exit pair, µs'),
            ('bare_us', 'bare EVALSHA `return 1`, µs'),
            ('pair_x_bare', 'pair ÷ bare EVALSHA (goal <= 5)'),
        ):
            rows.append(f'| {title}, {which} | {idle[stat + key]:.2f} | {live[stat + key]:.2f} |')
    rows.append(
        f'| projected ceiling of one Redis core, pairs/s | {1e6 / idle["pair_us"]:,.0f} | '
        f'{1e6 / live["pair_us"]:,.0f} |'
    )
    rows += ['', f'Single client, alternating 50 ms slices over {results["seconds_timed"]} s{label}', '']
    rows += [
        '| Client | bare EVALSHA/s | the two scripts alone, pairs/s | of floor | pool pairs/s | '
        'of floor (goal sync 0.85, async 0.8) |',
        '| --- | ---: | ---: | ---: | ---: | ---: |',
    ]
    for side in ('sync', 'async'):
        r = results[side]
        rows.append(
            f'| {side} | {r["bare_per_s"]:,.0f} | {r["scripts_per_s"]:,.0f} | {r["scripts_of_floor"]:.2f} | '
            f'{r["pairs_per_s"]:,.0f} | {r["of_floor"]:.2f} |'
        )
    g, m = results['growth'], results['memory']
    rows += [
        '',
        f'Growth: pair {g["live10.pair_us"]:.1f} µs at 10 live slots, {g["live100000.pair_us"]:.1f} µs at 100,000: '
        f'{g["growth_x"]:.2f}x (goal <= 1.3)',
        f'Memory: {m["bytes_per_slot"]:.0f} B per live slot at 1,000 slots ({m["encoding"]})',
        '',
        f'Scale: N processes entering and exiting back to back for {results["seconds_timed"]} s{label}',
        '',
        '| Pools | processes | enters/s | Redis CPU per pair, µs | projected ceiling of one Redis core, pairs/s |',
        '| --- | ---: | ---: | ---: | ---: |',
    ]
    for step, row in results['scale'].items():
        pools, n = step.split('.')
        rows.append(
            f'| {"one shared, 64 slots" if pools == "shared" else "one each"} | {n} | {row["enters_per_s"]:,.0f} | '
            f'{row["pair_us"]:.1f} | {row["ceiling_pairs_per_s"] or 0:,.0f} |'
        )
    return '\n'.join(rows)


@contextmanager
def server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from benchmarks.servers import ServerUnavailable, find_binary, own_server

    try:
        find_binary()
    except ServerUnavailable as exc:
        raise SystemExit(f'benchmarks: {exc}') from None
    with own_server() as started:
        yield started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.cost', description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='a few seconds: checks that it works, proves nothing')
    parser.add_argument('--json', type=Path, metavar='PATH', help='also write every figure here')
    parser.add_argument('--redis-url', help='use this Redis (idle, and not shared) instead of starting one')
    args = parser.parse_args(argv)
    with server(args.redis_url) as url:
        results = measure(url, args.quick)
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
