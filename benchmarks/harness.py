"""What every scenario shares: the run's config, timing in alternating slices, clients and pools,
request counting on the wire, one server-delta helper, and the process's identity.

Imported by the scenario modules, which the runner starts as scripts in this folder (with
either side's interpreter): only the standard library, redis-py and `py_cachify`."""

from __future__ import annotations

import importlib.metadata
import math
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aredis
import redis.connection

import py_cachify
from py_cachify import init_cachify, pool

PREFIX = 'PYC-'  # both packages' default prefix; every pool below uses it
WARMUP = 50  # calls before timing: connects, loads the Lua scripts (NOSCRIPT), warms caches
DEFAULT = object()  # "leave slot_exp out": each package then applies its own default (600 s)
HOLD_S = 0.001  # simulated work inside the pool (contention, processes)
RETRY_S = 0.001  # pause after a "full" answer before trying again
GRACE_S = 15.0  # a 3.1.0 worker may block 5 s on its meta-lock in acquire and again in release


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


def reap(workers: list[Any], timeout: float) -> None:
    """Join our own worker processes; kill (and join) any still running after `timeout` each."""
    for worker in workers:
        worker.join(timeout=timeout)
        if worker.is_alive():
            worker.kill()  # our own child, stuck past its deadline
            worker.join()


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


def fill_via_api(p: pool, n: int) -> None:
    """Take `n` slots and keep them: enter without exiting (the with-protocol, called directly)."""
    for _ in range(n):
        p.__enter__()


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
