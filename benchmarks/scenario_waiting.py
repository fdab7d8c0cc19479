"""Scenario 9: release-to-new-holder hand-overs, ours waiting against polling loops."""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aredis
import redis.connection
from harness import GRACE_S, Config, Result, WireCounter, percentile, server_delta

from py_cachify import CachifyPoolFullError, init_cachify, pool

# Waiting (scenario 9): hand-overs per variant, and the one long wait.
HAND_OVERS = 100  # 98 are timed (2 warm-up): p99 by nearest rank is then the slowest
LONG_HOLD_S = 1.5


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
