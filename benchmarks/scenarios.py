"""One benchmark scenario, run in the interpreter of the side under test: ours or py-cachify 3.1.0.

Both packages import as `py_cachify` and share the pool API, so the runner starts this file
once per scenario, side and round, with that side's Python, and reads the one JSON line it
prints. Only the standard library, redis-py and `py_cachify` are imported: this file must also
run in the baseline's virtualenv, which has nothing else.

    python benchmarks/scenarios.py --side ours --scenario sequential --redis-url redis://127.0.0.1:6390/0
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import math
import multiprocessing
import queue
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aredis
import redis.connection

import py_cachify
from py_cachify import CachifyPoolFullError, init_cachify, pool

PREFIX = 'PYC-'  # both packages' default prefix; every pool below uses it
WARMUP = 50  # calls before timing: connects, loads the Lua scripts (NOSCRIPT), warms caches
DEFAULT = object()  # "leave slot_exp out": each package then applies its own default (600 s)

# Contention (scenario 4) and several processes (scenario 5).
TASKS, TASK_POOL = 64, 8
PROCESSES, PROCESS_POOL = 4, 2  # fewer slots than processes, so the cap is actually tested
HOLD_S = 0.001  # simulated work inside the pool
RETRY_S = 0.001  # pause after a "full" answer before trying again
GRACE_S = 15.0  # a 3.1.0 worker may block 5 s on its meta-lock in acquire and again in release

# Waiting (scenario 9): hand-overs per variant, and the one long wait.
HAND_OVERS = 100  # 98 are timed (2 warm-up): p99 by nearest rank is then the slowest
LONG_HOLD_S = 1.5

# Scale (scenario 6). Pools this size are filled through the public API on both sides.
API_FILL_LIMIT = 1000


@dataclass(frozen=True)
class Config:
    side: str  # 'ours' or 'baseline'
    url: str
    quick: bool
    run_id: str  # in every key this run creates, so cleanup finds them all and nothing else

    # Short rounds, and more of them (the runner's default is 5): this machine's round trip
    # drifts over tens of seconds, and a median over many interleaved rounds straddles that.
    @property
    def seconds(self) -> float:
        """Time each operation of a timed loop gets."""
        return 0.1 if self.quick else 0.6

    @property
    def backlog_exp_s(self) -> int:
        """Lifetime of the slots that make an expired backlog: a fill must take less."""
        return 1 if self.quick else 2

    @property
    def load_seconds(self) -> float:
        """Length of the contention and multi-process runs."""
        return 0.3 if self.quick else 2.0

    def key(self, name: str) -> str:
        return f'bench-{self.run_id}-{name}'


@dataclass
class Result:
    metrics: dict[str, float] = field(default_factory=dict)
    na: dict[str, str] = field(default_factory=dict)  # metric -> why it was not measured
    info: dict[str, Any] = field(default_factory=dict)


# -- timing ----------------------------------------------------------------------------


@dataclass
class Timings:
    durations_ns: list[int] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def per_s(self) -> float:
        return len(self.durations_ns) / self.elapsed_s

    def percentile_us(self, q: float) -> float:
        return percentile(self.durations_ns, q) / 1000


def percentile(values: list[int], q: float) -> float:
    """Nearest-rank percentile: a value that was actually observed."""
    ordered = sorted(values)
    return float(ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))])


SLICE_NS = 50_000_000
# Several operations are timed over the same stretch of time, in alternating 50 ms slices:
# this machine's round trip itself drifts (here it halved for seconds while another process
# kept the other core busy), so a pool figure and the floor it is compared with must be
# timed side by side, not a minute apart.


def time_sync(ops: dict[str, Callable[[], object]], seconds: float) -> dict[str, Timings]:
    """Call each op back to back for `seconds` in total, in alternating slices, timing each call."""
    for op in ops.values():
        for _ in range(WARMUP):
            op()
    timings = {name: Timings() for name in ops}
    for _ in range(slices(seconds)):
        for name, op in ops.items():
            timing = timings[name]
            start = now = time.perf_counter_ns()
            while now - start < SLICE_NS:
                op()
                end = time.perf_counter_ns()
                timing.durations_ns.append(end - now)
                now = end
            timing.elapsed_s += (now - start) / 1e9
    return timings


async def time_async(ops: dict[str, Callable[[], Awaitable[object]]], seconds: float) -> dict[str, Timings]:
    """`time_sync` for coroutine functions.

    A twin on purpose: one helper for both would put an extra call inside the timed loop.
    """
    for op in ops.values():
        for _ in range(WARMUP):
            await op()
    timings = {name: Timings() for name in ops}
    for _ in range(slices(seconds)):
        for name, op in ops.items():
            timing = timings[name]
            start = now = time.perf_counter_ns()
            while now - start < SLICE_NS:
                await op()
                end = time.perf_counter_ns()
                timing.durations_ns.append(end - now)
                now = end
            timing.elapsed_s += (now - start) / 1e9
    return timings


def slices(seconds: float) -> int:
    return max(1, round(seconds * 1e9 / SLICE_NS))


def record(result: Result, timings: dict[str, Timings]) -> None:
    for prefix, timing in timings.items():
        result.metrics[f'{prefix}.per_s'] = timing.per_s
        result.metrics[f'{prefix}.p50_us'] = timing.percentile_us(0.50)
        result.metrics[f'{prefix}.p99_us'] = timing.percentile_us(0.99)


def record_with_floor(result: Result, timings: dict[str, Timings], prefix: str, round_trips: int) -> None:
    """Record `prefix` and its floor, and `prefix` as a fraction of floor/round trips.

    `round_trips` is what the operation needs at best: a pair takes a slot and gives it back.
    """
    record(result, timings)
    floor = timings[f'{prefix}.floor'].per_s / round_trips
    result.metrics[f'{prefix}.of_floor'] = timings[prefix].per_s / floor


FLOOR_SCRIPT = 'return 1'


def evalsha_floor(client: Any, sha: str) -> Callable[[], Any]:
    """A bare EVALSHA of `return 1` on `client` (sync or asyncio): one round trip, nothing else."""
    return lambda: client.evalsha(sha, 0)


# -- clients and pools -----------------------------------------------------------------


@contextmanager
def sync_redis(cfg: Config) -> Iterator[redis.Redis]:
    """A sync client, installed as the global py_cachify backend."""
    client = redis.Redis.from_url(cfg.url)
    init_cachify(sync_client=client)
    try:
        yield client
    finally:
        client.close()


@asynccontextmanager
async def async_redis(cfg: Config) -> AsyncIterator[aredis.Redis]:
    """An asyncio client (made inside the running loop it belongs to), installed globally."""
    sync_client = redis.Redis.from_url(cfg.url)
    client = aredis.Redis.from_url(cfg.url)
    init_cachify(sync_client=sync_client, async_client=client)
    try:
        yield client
    finally:
        await client.aclose()
        sync_client.close()


def make_pool(cfg: Config, name: str, max_size: int, slot_exp: object = DEFAULT) -> pool:
    # Only keyword arguments both APIs share; slot_exp is left out to get each side's default.
    extra: dict[str, Any] = {} if slot_exp is DEFAULT else {'slot_exp': slot_exp}
    return pool(key=cfg.key(name), max_size=max_size, **extra)


def sync_pair(p: pool) -> Callable[[], None]:
    def pair() -> None:
        with p:
            pass

    return pair


def async_pair(p: pool) -> Callable[[], Awaitable[None]]:
    async def pair() -> None:
        async with p:
            pass

    return pair


def storage_keys(cfg: Config, name: str) -> list[str]:
    """Every Redis key pool `name` can have, the one holding its slots first.

    For MEMORY USAGE (summed over the keys that exist) and to pre-fill ours at 100k.
    """
    full = PREFIX + cfg.key(name)
    if cfg.side == 'ours':
        from py_cachify.ops import pool_keys  # ours' own layout; py-cachify 3.1.0 has no such module

        keys = pool_keys(full)
        # The wait queue's keys exist only while someone waits; older layouts lack them.
        return [keys.slots, *(getattr(keys, extra) for extra in ('queue', 'leases') if hasattr(keys, extra))]
    # py-cachify 3.1.0 pickles the whole pool under <prefix><key>-state, guarded by <prefix><key>-lock.
    return [f'{full}-state', f'{full}-lock']


def memory_usage(client: redis.Redis, keys: list[str]) -> int:
    # samples=0: every element is counted, not estimated from a sample.
    used = sum(client.memory_usage(key, samples=0) or 0 for key in keys)
    if not used:
        raise RuntimeError(f'none of {keys} exists to measure')
    return used


def cleanup(cfg: Config) -> None:
    """Delete every key this run made (slots, states, meta-locks), on a shared server too."""
    with redis.Redis.from_url(cfg.url) as client:
        keys = list(client.scan_iter(match=f'*bench-{cfg.run_id}-*', count=1000))
        for start in range(0, len(keys), 1000):
            client.unlink(*keys[start : start + 1000])


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


# -- 3: requests the client sends ------------------------------------------------------


class WireCounter:
    """Counts what redis-py writes to its sockets while active.

    Every request goes through `send_packed_command` (sync and asyncio, single commands and
    pipelines alike), so wrapping it sees exactly what leaves the client: each call is one
    write, i.e. one round trip, and each RESP array in it is one request. Commands that a Lua
    script runs inside Redis never cross the wire and are not counted here.

    `only`, if set, is asked at each write: False leaves that write out (scenario 9 counts
    the waiter's requests, not those of the holder in the same process).
    """

    def __init__(self, only: Callable[[], bool] | None = None) -> None:
        self.active = False
        self.only = only
        self.writes = 0
        self.commands: Counter[str] = Counter()

    def install(self) -> None:
        import redis.asyncio.connection as async_connection

        self._wrap_sync(defining_class(redis.connection.Connection, 'send_packed_command'))
        self._wrap_async(defining_class(async_connection.Connection, 'send_packed_command'))

    def _wrap_sync(self, cls: type) -> None:
        original = cls.send_packed_command  # type: ignore[attr-defined]

        def send_packed_command(conn: Any, command: Any, check_health: bool = True) -> Any:
            self.note(command)
            return original(conn, command, check_health)

        setattr(cls, 'send_packed_command', send_packed_command)  # noqa: B010 - patching a method

    def _wrap_async(self, cls: type) -> None:
        original = cls.send_packed_command  # type: ignore[attr-defined]

        async def send_packed_command(conn: Any, command: Any, check_health: bool = True) -> Any:
            self.note(command)
            return await original(conn, command, check_health)

        setattr(cls, 'send_packed_command', send_packed_command)  # noqa: B010 - patching a method

    def note(self, packed: Any) -> None:
        if self.active and (self.only is None or self.only()):
            self.writes += 1
            self.commands.update(command_names(as_bytes(packed)))

    @contextmanager
    def counting(self) -> Iterator[None]:
        self.writes, self.commands = 0, Counter()
        self.active = True
        try:
            yield
        finally:
            self.active = False


def defining_class(cls: type, name: str) -> type:
    return next(klass for klass in cls.__mro__ if name in vars(klass))


def as_bytes(packed: Any) -> bytes:
    if isinstance(packed, str):
        return packed.encode()
    if isinstance(packed, (bytes, bytearray, memoryview)):
        return bytes(packed)
    return b''.join(bytes(chunk) for chunk in packed)


def command_names(data: bytes) -> list[str]:
    """The command name of each RESP request array (`*N` then N bulk strings) in `data`."""
    names: list[str] = []
    pos = 0
    while pos < len(data):
        end = data.index(b'\r\n', pos)
        items, pos = int(data[pos + 1 : end]), end + 2
        for item in range(items):
            end = data.index(b'\r\n', pos)
            length, pos = int(data[pos + 1 : end]), end + 2
            if item == 0:
                names.append(data[pos : pos + length].decode().upper())
            pos += length + 2
    return names


def count_sync(result: Result, prefix: str, counter: WireCounter, op: Callable[[], object], calls: int) -> None:
    for _ in range(WARMUP):
        op()
    with counter.counting():
        for _ in range(calls):
            op()
    note_counts(result, prefix, counter, calls)


async def count_async(
    result: Result, prefix: str, counter: WireCounter, op: Callable[[], Awaitable[object]], calls: int
) -> None:
    for _ in range(WARMUP):
        await op()
    with counter.counting():
        for _ in range(calls):
            await op()
    note_counts(result, prefix, counter, calls)


def note_counts(result: Result, prefix: str, counter: WireCounter, calls: int) -> None:
    result.metrics[f'{prefix}.requests'] = sum(counter.commands.values()) / calls
    result.metrics[f'{prefix}.round_trips'] = counter.writes / calls
    result.info[f'{prefix}.by_command'] = {name: n / calls for name, n in sorted(counter.commands.items())}


def server_cost(result: Result, client: redis.Redis, op: Callable[[], object], calls: int) -> None:
    """Commands Redis executed (scripts' inner commands included) and server CPU, per call.

    INFO stats counts a script's inner commands in total_commands_processed, so this is what
    Redis did, not what the client sent. Only meaningful on a server nobody else is using.
    """
    before = client.info()  # default sections hold stats and cpu; naming several needs Redis 7
    for _ in range(calls):
        op()
    after = client.info()  # default sections hold stats and cpu; naming several needs Redis 7
    # The first INFO is itself counted by the second one.
    commands = after['total_commands_processed'] - before['total_commands_processed'] - 1
    cpu = sum(after[k] - before[k] for k in ('used_cpu_user', 'used_cpu_sys'))
    result.metrics['sync.pair.server_commands'] = commands / calls
    result.metrics['sync.pair.server_cpu_us'] = cpu * 1e6 / calls


def requests(cfg: Config) -> Result:
    """3. Requests and round trips the client sends per enter+exit pair and per size()."""
    result = Result()
    counter = WireCounter()
    counter.install()
    calls = 50 if cfg.quick else 1000
    with sync_redis(cfg) as client:
        p = make_pool(cfg, 'requests-sync', 8)
        count_sync(result, 'sync.pair', counter, sync_pair(p), calls)
        count_sync(result, 'sync.size', counter, p.size, calls)
        server_cost(result, client, sync_pair(p), calls)

    async def run_async() -> None:
        async with async_redis(cfg):
            p = make_pool(cfg, 'requests-async', 8)
            await count_async(result, 'async.pair', counter, async_pair(p), calls)
            await count_async(result, 'async.size', counter, p.asize, calls)

    asyncio.run(run_async())
    return result


# -- 4: contention inside one event loop -----------------------------------------------


@dataclass
class Contention:
    """What the 64 tasks saw, kept on the client side, independent of the pool's own answers.

    `upper` bounds how many slots Redis can hold: it counts acquires sent (the pool may have
    granted them already) minus releases acknowledged and acquires answered "full". A "full"
    answer is certainly wrong if `upper`, which includes the asking task itself, stayed at or
    below max_size for the whole flight of the request, i.e. never rose past it; `crossings`
    counts those rises, so the check is O(1) per request.

    Figures are recorded from `start()` until `close()` at the deadline; what the tasks do
    while they are being cancelled after it is not measured.
    """

    max_size: int
    measuring: bool = False
    started_ns: int = 0
    closed_ns: int = 0
    upper: int = 0
    crossings: int = 0
    inside: int = 0  # tasks in the body of their `async with`
    max_inside: int = 0
    releasing: int = 0  # tasks past their body, still in __aexit__ (the slot may or may not be free yet)
    occupancy_ns: int = 0  # integral of `inside` over time: average occupancy = this / duration
    releasing_ns: int = 0  # the same for `releasing`
    changed_ns: int = 0
    enters: int = 0
    full: int = 0
    full_while_free: int = 0
    errors: int = 0
    waits_ns: list[int] = field(default_factory=list)
    waiting_since: dict[object, int] = field(default_factory=dict)  # task -> when its current wait began
    # Harness checks, not figures: tasks still retrying after their cancel, and tasks not done
    # GRACE_S after it.
    outlived_cancel: int = 0
    stuck: int = 0

    def start(self) -> None:
        self.started_ns = self.changed_ns = time.perf_counter_ns()
        self.measuring = True

    def close(self) -> None:
        # Tasks still waiting count with the wait so far: leaving them out would hide exactly
        # the starved ones.
        self._account()
        self.closed_ns = time.perf_counter_ns()
        self.waits_ns.extend(self.closed_ns - since for since in self.waiting_since.values())
        self.measuring = False

    @property
    def seconds(self) -> float:
        return (self.closed_ns - self.started_ns) / 1e9

    def sent(self) -> tuple[int, bool]:
        self.upper += 1
        if self.upper == self.max_size + 1:
            self.crossings += 1
        return self.crossings, self.upper > self.max_size

    def answered_full(self, token: tuple[int, bool]) -> None:
        crossings, past_max = token
        if self.measuring:
            self.full += 1
            self.full_while_free += not past_max and crossings == self.crossings
        self.upper -= 1

    def entered(self, task: object) -> None:
        waited = time.perf_counter_ns() - self.waiting_since.pop(task)
        self._account()
        self.inside += 1
        if self.measuring:
            self.enters += 1
            self.waits_ns.append(waited)
            self.max_inside = max(self.max_inside, self.inside)

    def left(self) -> None:
        self._account()
        self.inside -= 1
        self.releasing += 1

    def released(self, acknowledged: bool) -> None:
        self._account()
        self.releasing -= 1
        if acknowledged:  # else the slot may still be held: `upper` keeps counting it
            self.upper -= 1

    def _account(self) -> None:
        now = time.perf_counter_ns()
        if self.measuring:
            self.occupancy_ns += self.inside * (now - self.changed_ns)
            self.releasing_ns += self.releasing * (now - self.changed_ns)
        self.changed_ns = now


async def contention_task(p: pool, state: Contention) -> None:
    me = object()
    while state.measuring:
        state.waiting_since[me] = time.perf_counter_ns()
        while True:
            token = state.sent()
            body_done = False
            try:
                async with p:
                    state.entered(me)
                    try:
                        await asyncio.sleep(HOLD_S)
                    finally:
                        state.left()
                        body_done = True
            except CachifyPoolFullError:
                state.answered_full(token)
                if not state.measuring:
                    # Also ends a task whose cancel was lost inside the library: with 3.1.0 the
                    # cancelled tasks' slots can stay taken, and it would retry "full" forever.
                    state.outlived_cancel += 1
                    return
                await asyncio.sleep(RETRY_S)
                continue
            except Exception:  # e.g. 3.1.0's meta-lock timing out in release: the slot may stay held
                state.errors += state.measuring
                if body_done:
                    state.released(acknowledged=False)
                break
            state.released(acknowledged=True)
            break


def contention(cfg: Config) -> Result:
    """4. 64 asyncio tasks retrying on one pool of 8 for a fixed time."""
    state = Contention(TASK_POOL)

    async def run() -> None:
        async with async_redis(cfg):
            p = make_pool(cfg, 'contention', TASK_POOL)
            await async_pair(p)()  # connects and loads the scripts before the clock starts
            state.start()
            tasks = [asyncio.ensure_future(contention_task(p, state)) for _ in range(TASKS)]
            await asyncio.sleep(cfg.load_seconds)
            state.close()
            for task in tasks:
                task.cancel()
            _, stuck = await asyncio.wait(tasks, timeout=GRACE_S)
            state.stuck = len(stuck)

    asyncio.run(run())
    result = Result(
        metrics={
            'enters_per_s': state.enters / state.seconds,
            'max_inside': state.max_inside,
            'avg_inside': state.occupancy_ns / (state.seconds * 1e9),
            'avg_releasing': state.releasing_ns / (state.seconds * 1e9),
            'full_while_free': state.full_while_free,
            'full_answers': state.full,
            'errors': state.errors,
        },
        info={
            'tasks': TASKS,
            'pool': TASK_POOL,
            'hold_s': HOLD_S,
            'retry_s': RETRY_S,
            'seconds': state.seconds,
            'outlived_cancel': state.outlived_cancel,
            'stuck_after_cancel': state.stuck,
        },
    )
    if state.waits_ns:
        result.metrics['wait_p50_ms'] = percentile(state.waits_ns, 0.50) / 1e6
        result.metrics['wait_p99_ms'] = percentile(state.waits_ns, 0.99) / 1e6
    return result


# -- 5: several processes on one pool --------------------------------------------------


def process_worker(
    url: str,
    key: str,
    seconds: float,
    barrier: Any,
    holders: Any,
    highest: Any,
    totals: Any,
    index: int,
) -> None:
    """One process: enter, hold, leave, for `seconds`; counts holders outside the pool."""
    init_cachify(sync_client=redis.Redis.from_url(url))
    p = pool(key=key, max_size=PROCESS_POOL)
    sync_pair(p)()  # connect and load the scripts before the common start
    barrier.wait()
    deadline = time.perf_counter() + seconds
    enters = full = 0
    while time.perf_counter() < deadline:
        try:
            with p:
                # Counted strictly inside the pool's with: this counter never exceeds the real
                # number of holders, so a value above max_size is a real violation.
                with holders.get_lock():
                    holders.value += 1
                    highest.value = max(highest.value, holders.value)
                enters += 1
                try:
                    time.sleep(HOLD_S)
                finally:
                    with holders.get_lock():
                        holders.value -= 1
        except CachifyPoolFullError:
            full += 1
            time.sleep(RETRY_S)
    totals[2 * index], totals[2 * index + 1] = enters, full


def processes(cfg: Config) -> Result:
    """5. Several processes on one pool: throughput, and the most holders ever seen at once."""
    ctx = multiprocessing.get_context('spawn')  # a clean interpreter per worker, no inherited sockets
    barrier = ctx.Barrier(PROCESSES + 1)
    holders, highest = ctx.Value('i', 0), ctx.Value('i', 0)
    totals = ctx.Array('q', 2 * PROCESSES)
    workers = [
        ctx.Process(
            target=process_worker,
            args=(cfg.url, cfg.key('processes'), cfg.load_seconds, barrier, holders, highest, totals, i),
        )
        for i in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    barrier.wait(timeout=60)
    for worker in workers:
        worker.join(timeout=cfg.load_seconds + GRACE_S)
        if worker.is_alive():
            worker.kill()  # our own child, stuck past its deadline
            worker.join()
    failed = sum(1 for worker in workers if worker.exitcode != 0)
    return Result(
        metrics={
            'enters_per_s': sum(totals[0::2]) / cfg.load_seconds,
            'max_holders': highest.value,
            'over_limit': max(0, highest.value - PROCESS_POOL),
            'full_answers': sum(totals[1::2]),
            'failed_workers': failed,
        },
        info={'processes': PROCESSES, 'pool': PROCESS_POOL, 'hold_s': HOLD_S, 'retry_s': RETRY_S},
    )


# -- 6: scale --------------------------------------------------------------------------


def fill_via_api(p: pool, n: int) -> None:
    """Take `n` slots and keep them: enter without exiting (the with-protocol, called directly)."""
    for _ in range(n):
        p.__enter__()


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


# -- 9: waiting for a slot -------------------------------------------------------------
#
# One holder and one waiter on a pool of 1, over and over. The holder takes the slot and
# lets the waiter start; holds it HOLD_MIN_S + U(0, HOLD_SPREAD_S) (one seeded sequence, the
# same on both sides); then releases, noting the time just before the release call and just
# after it returns. The waiter notes when it has entered, gives the slot straight back and
# reports. Ours waits with nowait=False; a polling loop (try, on "full" sleep POLL_S, try
# again) runs over either library's nowait API. The spread is a whole poll interval, so a
# release lands at a uniformly random point of the poller's cycle.

POLL_S = 0.010
HOLD_MIN_S = 0.002  # by then the waiter has had its "full" answer and waits (or sleeps between polls)
HOLD_SPREAD_S = 0.010
WAIT_TIMEOUT_S = 30.0  # ours' waiter gives up after this: a lost wake-up fails the run rather than hang it
LATENCY_SKIP = 2  # first hand-overs of a variant left out of its latencies: the waiter subscribes then
CONNECT_COMMANDS = frozenset({'CLIENT', 'HELLO', 'AUTH', 'SELECT'})  # a new connection's handshake, not waiting
# Who is sending, so the waiter's requests can be told from the holder's in one process.
# Threads the library starts (its subscriber) begin with an empty context: 'other'.
ROLE: ContextVar[str] = ContextVar('benchmark_role', default='other')


def waiter_counts() -> bool:
    """Count the waiter while it takes a slot, and the library's own threads (its subscriber)."""
    return ROLE.get() in ('acquire', 'other')


def hold_times(n: int) -> list[float]:
    rng = random.Random('waiting')  # a str seed is hashed the same in every process
    return [HOLD_MIN_S + rng.random() * HOLD_SPREAD_S for _ in range(n)]


@dataclass
class HandOvers:
    """One variant's hand-overs. Times are `time.monotonic_ns()`: on Linux that is
    CLOCK_MONOTONIC, one clock for every process, so a waiter in another process compares."""

    sent_ns: list[int] = field(default_factory=list)  # just before the holder's release call
    returned_ns: list[int] = field(default_factory=list)  # just after it returned
    entered_ns: list[int] = field(default_factory=list)  # the waiter is inside the pool
    commands: Counter[str] = field(default_factory=Counter)  # the waiter's requests, all hand-overs
    server: dict[str, float] = field(default_factory=dict)  # what Redis did over all hand-overs

    def add(self, sent: int, returned: int, entered: int) -> None:
        self.sent_ns.append(sent)
        self.returned_ns.append(returned)
        self.entered_ns.append(entered)


def record_hand_overs(result: Result, prefix: str, done: HandOvers) -> None:
    n = len(done.entered_ns)
    skip = LATENCY_SKIP if n > 4 * LATENCY_SKIP else 0
    rounds = list(zip(done.sent_ns, done.returned_ns, done.entered_ns, strict=True))[skip:]
    spans = {
        '': [entered - returned for _, returned, entered in rounds],  # release returned -> entered
        'sent_': [entered - sent for sent, _, entered in rounds],  # release sent -> entered
        'release_': [returned - sent for sent, returned, _ in rounds],  # the release call itself
    }
    for name, values in spans.items():
        result.metrics[f'{prefix}.{name}p50_ms'] = percentile(values, 0.50) / 1e6
        result.metrics[f'{prefix}.{name}p99_ms'] = percentile(values, 0.99) / 1e6
    requests = sum(count for name, count in done.commands.items() if name not in CONNECT_COMMANDS)
    result.metrics[f'{prefix}.requests'] = requests / n
    result.metrics[f'{prefix}.server_commands'] = done.server['commands'] / n
    result.metrics[f'{prefix}.server_cpu_us'] = done.server['cpu_us'] / n
    result.info[f'{prefix}.hand_overs'] = n
    result.info[f'{prefix}.requests_by_command'] = {name: c / n for name, c in sorted(done.commands.items())}
    result.info[f'{prefix}.entered_before_release_returned'] = sum(1 for v in spans[''] if v < 0)
    # Release sent -> entered past 50 ms: 5 poll intervals; with 3.1.0 a meta-lock collision (0.1 s).
    result.info[f'{prefix}.over_50_ms'] = sum(1 for v in spans['sent_'] if v > 50_000_000)


@contextmanager
def server_delta(url: str) -> Iterator[dict[str, float]]:
    """Commands Redis ran (those scripts call included) and its CPU, while the block ran."""
    delta: dict[str, float] = {}
    with redis.Redis.from_url(url) as admin:
        before = admin.info()  # default sections hold stats and cpu; naming several needs Redis 7
        yield delta
        after = admin.info()  # default sections hold stats and cpu; naming several needs Redis 7
    # The first INFO is itself counted by the second one.
    delta['commands'] = after['total_commands_processed'] - before['total_commands_processed'] - 1
    delta['cpu_us'] = sum(after[k] - before[k] for k in ('used_cpu_user', 'used_cpu_sys')) * 1e6


def waiter_pool(key: str, mode: str) -> pool:
    """The waiter's pool object: ours waiting (`wait`, `fair`), or either side's nowait pool (`poll`)."""
    if mode == 'poll':
        return pool(key=key, max_size=1)
    return pool(key=key, max_size=1, nowait=False, timeout=WAIT_TIMEOUT_S, fair=mode == 'fair')


def sync_take(p: pool, poll: bool) -> Callable[[], object]:
    """Take a slot of `p`: by its own waiting (ours, nowait=False), or in a polling loop."""
    if not poll:
        return p.__enter__

    def take() -> None:
        while True:
            try:
                p.__enter__()
                return
            except CachifyPoolFullError:
                time.sleep(POLL_S)

    return take


def async_take(p: pool, poll: bool) -> Callable[[], Awaitable[object]]:
    """`sync_take` for asyncio."""
    if not poll:
        return p.__aenter__

    async def take() -> None:
        while True:
            try:
                await p.__aenter__()
                return
            except CachifyPoolFullError:
                await asyncio.sleep(POLL_S)

    return take


def settled(message: int | BaseException) -> int:
    if isinstance(message, BaseException):
        raise RuntimeError(f'the waiter failed: {message!r}') from message
    return message


def hold_then_release(holder: Any, hold: float, start_waiter: Callable[[], object]) -> tuple[int, int]:
    """Take the slot, let the waiter start, hold, release; returns (release sent, release returned) in ns."""
    holder.__enter__()
    start_waiter()
    time.sleep(hold)
    sent = time.monotonic_ns()
    holder.__exit__(None, None, None)
    return sent, time.monotonic_ns()


def take_and_leave(take: Callable[[], object], waiter: Any) -> int:
    """One waited acquire; returns when it entered (monotonic ns), after giving the slot back."""
    ROLE.set('acquire')
    take()
    entered = time.monotonic_ns()
    ROLE.set('release')
    waiter.__exit__(None, None, None)
    return entered


def hand_over_threads(url: str, key: str, mode: str, holds: list[float], counter: WireCounter) -> HandOvers:
    """Holder in this thread, waiter in another, one sync client."""
    holder, waiter = pool(key=key, max_size=1), waiter_pool(key, mode)
    take = sync_take(waiter, mode == 'poll')
    go: queue.SimpleQueue[bool] = queue.SimpleQueue()
    entered: queue.SimpleQueue[int | BaseException] = queue.SimpleQueue()

    def waiter_loop() -> None:
        while go.get():
            try:
                entered.put(take_and_leave(take, waiter))
            except Exception as exc:
                entered.put(exc)
                return

    thread = threading.Thread(target=waiter_loop, name='benchmark-waiter', daemon=True)
    thread.start()
    ROLE.set('holder')
    done = HandOvers()
    try:
        with server_delta(url) as done.server, counter.counting():
            for hold in holds:
                sent, returned = hold_then_release(holder, hold, lambda: go.put(True))
                done.add(sent, returned, settled(entered.get(timeout=WAIT_TIMEOUT_S + 5)))
        done.commands = Counter(counter.commands)
    finally:
        go.put(False)
        thread.join(timeout=GRACE_S)
    return done


async def hand_over_tasks(url: str, key: str, mode: str, holds: list[float], counter: WireCounter) -> HandOvers:
    """Holder and waiter as two tasks of one event loop."""
    holder, waiter = pool(key=key, max_size=1), waiter_pool(key, mode)
    take = async_take(waiter, mode == 'poll')
    go: asyncio.Queue[bool] = asyncio.Queue()
    entered: asyncio.Queue[int | BaseException] = asyncio.Queue()

    async def waiter_loop() -> None:
        while await go.get():
            try:
                ROLE.set('acquire')
                await take()
                now = time.monotonic_ns()
                ROLE.set('release')  # ours' release runs in a shielded task: it copies this
                await waiter.__aexit__(None, None, None)
                entered.put_nowait(now)
            except Exception as exc:
                entered.put_nowait(exc)
                return

    ROLE.set('holder')
    task = asyncio.ensure_future(waiter_loop())
    done = HandOvers()
    try:
        with server_delta(url) as done.server, counter.counting():
            for hold in holds:
                await holder.__aenter__()
                go.put_nowait(True)
                await asyncio.sleep(hold)
                sent = time.monotonic_ns()
                await holder.__aexit__(None, None, None)
                returned = time.monotonic_ns()
                done.add(sent, returned, settled(await asyncio.wait_for(entered.get(), WAIT_TIMEOUT_S + 5)))
        done.commands = Counter(counter.commands)
    finally:
        go.put_nowait(False)
        _, pending = await asyncio.wait([task], timeout=GRACE_S)
        for stuck in pending:
            stuck.cancel()
    return done


def hand_over_worker(url: str, key: str, mode: str, conn: Any) -> None:
    """The waiter in a process of its own (sync): takes a slot on each go, sends when it entered."""
    counter = WireCounter(only=waiter_counts)
    counter.install()
    init_cachify(sync_client=redis.Redis.from_url(url))
    waiter = waiter_pool(key, mode)
    take = sync_take(waiter, mode == 'poll')
    waiter.size()  # connects before the first hand-over
    conn.send('ready')
    try:
        with counter.counting():
            while conn.recv():
                conn.send(take_and_leave(take, waiter))
    except Exception as exc:
        conn.send(f'{type(exc).__name__}: {exc}')
        raise
    conn.send(dict(counter.commands))


def expect(conn: Any, kind: type[Any]) -> Any:
    """The waiting process's next message, which must be a `kind`; else what went wrong there."""
    if not conn.poll(WAIT_TIMEOUT_S + 5):
        raise RuntimeError('the waiting process stopped answering')
    message = conn.recv()  # EOFError if it died
    if not isinstance(message, kind):
        raise RuntimeError(f'the waiting process failed: {message}')
    return message


def hand_over_processes(url: str, key: str, mode: str, holds: list[float]) -> HandOvers:
    """Holder in this process, waiter in a spawned one, each with its own sync client."""
    ctx = multiprocessing.get_context('spawn')
    mine, theirs = ctx.Pipe()
    worker = ctx.Process(target=hand_over_worker, args=(url, key, mode, theirs))
    worker.start()
    theirs.close()  # so that the worker's death reads as EOF here
    holder = pool(key=key, max_size=1)
    done = HandOvers()
    try:
        started = expect(mine, str)
        if started != 'ready':
            raise RuntimeError(f'the waiting process failed: {started}')
        with server_delta(url) as done.server:
            for hold in holds:
                sent, returned = hold_then_release(holder, hold, lambda: mine.send(True))
                done.add(sent, returned, expect(mine, int))
        mine.send(False)
        done.commands = Counter(expect(mine, dict))
    finally:
        worker.join(timeout=GRACE_S)
        if worker.is_alive():
            worker.kill()  # our own child, stuck
            worker.join()
    return done


def waiting(cfg: Config) -> Result:
    """9. Release-to-new-holder latency and the waiter's requests: ours waiting against polling loops."""
    result = Result()
    ours = cfg.side == 'ours'
    polls = ('wait', 'poll') if ours else ('poll',)  # py-cachify 3.1.0 can only poll
    holds = hold_times(20 if cfg.quick else HAND_OVERS)
    long_hold = [0.2 if cfg.quick else LONG_HOLD_S]
    counter = WireCounter(only=waiter_counts)
    counter.install()
    if not ours:
        reason = 'py-cachify 3.1.0 cannot wait for a slot: its polling loop is in the rows that compare against it'
        for prefix in ('proc.wait', 'proc.fair', 'thread.wait', 'async.wait', 'async.wait_thread', 'long.wait'):
            for metric in ('p50_ms', 'p99_ms', 'requests', 'server_commands'):
                result.na[f'{prefix}.{metric}'] = reason
    # Never closed: ours' subscriber thread keeps its connection till the process ends.
    client = redis.Redis.from_url(cfg.url)
    init_cachify(sync_client=client)

    for mode in (*polls, 'fair') if ours else polls:
        done = hand_over_processes(cfg.url, cfg.key(f'proc-{mode}'), mode, holds)
        record_hand_overs(result, f'proc.{mode}', done)
    for mode in polls:
        key = cfg.key(f'thread-{mode}')
        record_hand_overs(result, f'thread.{mode}', hand_over_threads(cfg.url, key, mode, holds, counter))
        # One long wait on the same pool: ours is subscribed to it by now.
        record_hand_overs(result, f'long.{mode}', hand_over_threads(cfg.url, key, mode, long_hold, counter))

    async def run_async() -> None:
        # Both clients given: ours' subscriber is the sync client's thread.
        both = aredis.Redis.from_url(cfg.url)
        init_cachify(sync_client=client, async_client=both)
        for mode in polls:
            done = await hand_over_tasks(cfg.url, cfg.key(f'async-{mode}'), mode, holds, counter)
            record_hand_overs(result, 'async.wait_thread' if mode == 'wait' else f'async.{mode}', done)
        if ours:
            # An asyncio client alone: ours' subscriber is a task in this loop.
            alone = aredis.Redis.from_url(cfg.url)
            init_cachify(async_client=alone)
            done = await hand_over_tasks(cfg.url, cfg.key('async-alone'), 'wait', holds, counter)
            record_hand_overs(result, 'async.wait', done)
            await stop_other_tasks()  # ours' subscriber task, before its client closes under it
            await alone.aclose()
        await both.aclose()

    asyncio.run(run_async())
    result.info.update(
        {'poll_s': POLL_S, 'hold_min_s': HOLD_MIN_S, 'hold_spread_s': HOLD_SPREAD_S, 'long_hold_s': long_hold[0]}
    )
    return result


async def stop_other_tasks() -> None:
    others = asyncio.all_tasks() - {asyncio.current_task()}
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


# -- entry point -----------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[Config], Result]] = {
    'sequential': sequential,
    'floor': floor,
    'requests': requests,
    'contention': contention,
    'processes': processes,
    'scale': scale,
    'size': size,
    'embedded': embedded,
    'waiting': waiting,
}


def identity() -> dict[str, Any]:
    """Which py_cachify this process really runs, so the runner can check it got the right side."""
    try:
        version = importlib.metadata.version('py-cachify')
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {
        'py_cachify_file': py_cachify.__file__,
        'py_cachify_version': version,
        'redis_py': importlib.metadata.version('redis'),
        'python': sys.version.split()[0],
        'executable': sys.executable,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--side', choices=('ours', 'baseline'), required=True)
    parser.add_argument('--scenario', choices=sorted(SCENARIOS), required=True)
    parser.add_argument('--redis-url', required=True)
    parser.add_argument('--quick', action='store_true')
    args = parser.parse_args()
    cfg = Config(side=args.side, url=args.redis_url, quick=args.quick, run_id=uuid.uuid4().hex[:12])
    try:
        result = SCENARIOS[args.scenario](cfg)
    finally:
        cleanup(cfg)
    out = {'metrics': result.metrics, 'na': result.na, 'info': result.info, 'identity': identity()}
    print(json.dumps(out))


if __name__ == '__main__':
    main()
