"""How long Redis spends on each public pool operation's slowest command, on pools of 100,000 slots.

    python -m benchmarks.slowlog                  # prints a table, writes benchmarks/results-slowlog.json
    python -m benchmarks.slowlog --slots 10000 --json out.json --redis-url redis://127.0.0.1:6390/0

Redis runs one command at a time, so one slow script stalls every client of the server. For
each backlog, 100,000 expired slots (a crashed fleet) and 100,000 live slots, this fills one
pool with a pipeline of ZADDs, logs every command (`slowlog-log-slower-than 0`), runs one
public operation (enter/exit, size, holders, extend, waiting, purge) and reads SLOWLOG back:
the EVALSHAs that name the pool, as Redis timed them (the script's own work: no network, no
client). Each operation runs --repeat times; "slowest" is the slowest command of its best run
(a loaded machine can preempt redis-server mid-command in any one run), "median" the median
command over all runs. tests/test_slowlog.py asserts the same runs never log a pool command
at `slowlog-log-slower-than 1000` (1 ms).

Starts its own redis-server on a free loopback port unless --redis-url is given.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `python benchmarks/slowlog.py` puts benchmarks/, not the repo, on the path

import redis  # noqa: E402

from py_cachify import Cachify, init_cachify, pool  # noqa: E402
from py_cachify.ops import pool_keys  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

__all__ = ['BACKLOGS', 'OPERATIONS', 'Logged', 'main', 'measure']

PREFIX = 'slowlog-'
BACKLOGS = ('expired', 'live')
OPERATIONS = ('enter/exit', 'size', 'holders', 'extend', 'waiting', 'purge')
DEFAULT_JSON = REPO / 'benchmarks' / 'results-slowlog.json'
_FILL_CHUNK = 10_000


@dataclass
class Logged:
    """The pool's commands SLOWLOG kept during one operation: durations in µs, slowest first."""

    durations: list[int] = field(default_factory=list)
    in_order: list[int] = field(default_factory=list)  # the same, in the order they ran

    @property
    def slowest(self) -> int:
        return self.durations[0] if self.durations else 0


class Probe:
    """Reads SLOWLOG around one measured stretch of an operation."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client = client
        self.tag = pool_keys(PREFIX + key).slots.split('}')[0].encode() + b'}'
        self.logged = Logged()

    @contextlib.contextmanager
    def measured(self) -> Iterator[None]:
        self.client.slowlog_reset()
        yield
        entries: list[dict[str, Any]] = self.client.slowlog_get(100_000)
        durations = [
            int(entry['duration'])
            for entry in reversed(entries)  # SLOWLOG lists the newest first
            if _command(entry).upper().startswith((b'EVALSHA', b'EVAL')) and self.tag in _command(entry)
        ]
        self.logged = Logged(sorted(durations, reverse=True), durations)


def _command(entry: dict[str, Any]) -> bytes:
    command = entry['command']
    return command if isinstance(command, bytes) else str(command).encode()


def fill(client: redis.Redis, key: str, slots: int, backlog: str) -> None:
    """Give the pool `slots` slots that expired long ago, or that live for ten minutes."""
    keys = pool_keys(PREFIX + key)
    client.delete(keys.slots, keys.queue, keys.leases)
    seconds, micros = client.time()
    now = int(seconds) * 1000 + int(micros) // 1000
    base = 1_000 if backlog == 'expired' else now + 600_000
    pipe = client.pipeline(transaction=False)
    for start in range(0, slots, _FILL_CHUNK):
        pipe.zadd(keys.slots, {f'{backlog}-{i:07}': base + i for i in range(start, min(start + _FILL_CHUNK, slots))})
    pipe.pexpireat(keys.slots, now + 900_000)
    pipe.execute()


def _enter_exit(p: pool, probe: Probe, cachify: Cachify) -> None:
    with probe.measured(), p:
        pass


def _size(p: pool, probe: Probe, cachify: Cachify) -> None:
    with probe.measured():
        p.size()


def _holders(p: pool, probe: Probe, cachify: Cachify) -> None:
    with probe.measured():
        p.holders()


def _extend(p: pool, probe: Probe, cachify: Cachify) -> None:
    with p.acquire() as lease, probe.measured():
        lease.extend()


def _purge(p: pool, probe: Probe, cachify: Cachify) -> None:
    with probe.measured():
        p.purge()


def _waiting(p: pool, probe: Probe, cachify: Cachify) -> None:
    # The last free slot is held; a waiter queues for it (fair) and gets it on its release.
    waiter = cachify.pool(p.key, max_size=p.max_size, nowait=False, timeout=30, fair=True)
    holder = p.acquire()
    failure: list[BaseException] = []

    def wait() -> None:
        try:
            waiter.acquire().release()
        except BaseException as exc:  # reported below, in the caller's thread
            failure.append(exc)

    with probe.measured():
        thread = threading.Thread(target=wait, name='slowlog-waiter')
        thread.start()
        try:
            queue = pool_keys(PREFIX + p.key).queue
            deadline = time.monotonic() + 30
            while not probe.client.exists(queue) and thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.005)  # polling for the waiter to queue, not a timed assumption
        finally:
            holder.release()
            thread.join(60)
    if failure:
        raise failure[0]
    if thread.is_alive():
        raise RuntimeError('the waiter never got the released slot')


_RUNS: dict[str, Callable[[pool, Probe, Cachify], None]] = {
    'enter/exit': _enter_exit,
    'size': _size,
    'holders': _holders,
    'extend': _extend,
    'waiting': _waiting,
    'purge': _purge,
}


def measure(client: redis.Redis, backlog: str, operation: str, slots: int) -> Logged:
    """Fill a pool with `slots` slots of `backlog`, run `operation` once, and return what SLOWLOG kept."""
    key = f'{backlog}-{operation.replace("/", "-")}'
    fill(client, key, slots, backlog)
    # Room for one more holder, and for no more: the waiting run needs a full pool.
    max_size = 1 if backlog == 'expired' else slots + 1
    cachify = init_cachify(client, prefix=PREFIX, is_global=False)
    probe = Probe(client, key)
    try:
        _RUNS[operation](cachify.pool(key, max_size=max_size, slot_exp=60), probe, cachify)
    finally:
        cachify.close()
        keys = pool_keys(PREFIX + key)
        client.unlink(keys.slots, keys.queue, keys.leases)
    return probe.logged


@dataclass(frozen=True)
class Figures:
    """One operation's figures over its runs, in µs."""

    slowest: int  # the slowest command of the best run
    median: int  # the median command over all runs
    commands: int  # pool commands per run (the most of any run)


def run_all(client: redis.Redis, slots: int, repeat: int) -> dict[str, dict[str, Figures]]:
    client.config_set('slowlog-log-slower-than', 0)
    client.config_set('slowlog-max-len', 100_000)
    figures: dict[str, dict[str, Figures]] = {}
    for backlog in BACKLOGS:
        figures[backlog] = {}
        for op in OPERATIONS:
            runs = [measure(client, backlog, op, slots) for _ in range(repeat)]
            every = [d for run in runs for d in run.durations] or [0]
            figures[backlog][op] = Figures(
                slowest=min(run.slowest for run in runs),
                median=round(statistics.median(every)),
                commands=max(len(run.durations) for run in runs),
            )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--slots', type=int, default=100_000)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--redis-url', default=None, help='an existing server (its SLOWLOG settings are changed)')
    parser.add_argument('--json', type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        url = args.redis_url or stack.enter_context(RedisServer()).url
        client = stack.enter_context(contextlib.closing(redis.Redis.from_url(url)))
        version = client.info('server')['redis_version']
        results = run_all(client, args.slots, args.repeat)
    print(f'Pool commands per operation as SLOWLOG timed them (µs), redis {version}, {args.slots:,} slots')
    print(f'{"":<12}' + ''.join(f'{backlog + " slots":>30}' for backlog in BACKLOGS))
    print(f'{"operation":<12}' + f'{"slowest":>12}{"median":>9}{"commands":>9}' * len(BACKLOGS))
    for op in OPERATIONS:
        row = ''.join(
            f'{results[b][op].slowest:>12}{results[b][op].median:>9}{results[b][op].commands:>9}' for b in BACKLOGS
        )
        print(f'{op:<12}{row}')
    document = {
        'when': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'redis': version,
        'slots': args.slots,
        'repeat': args.repeat,
        'figures_us': {b: {op: dataclasses.asdict(results[b][op]) for op in OPERATIONS} for b in BACKLOGS},
    }
    args.json.write_text(json.dumps(document, indent=2) + '\n')
    print(f'wrote {args.json}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
