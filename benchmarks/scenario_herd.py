"""Scenario 10: a crowd of waiters on one slot, spread over processes: no thundering herd (issue 11).

One pool of max_size 1 and P spawned processes of T threads each; every thread loops for the
run: `with pool(key, 1, nowait=False): sleep(HOLD_S)`, with nothing in between, so every
acquire but the very first waits. Fleets: 1x800, 4x200, 16x50 (processes x threads), and
4x200 with fair=True. Each process has one client (a connection per thread, one subscriber
connection), subscribed to the pool's channel before the common start.

Per fleet:
- hand-overs/s: acquires that succeeded within the run, per second;
- acquire EVALSHA per successful acquire, counted in each process around the backend (every
  try, the vain ones included), and all EVALSHA per successful acquire (acquires, releases,
  leaves) from `INFO commandstats` on the server (it must be the run's own: the runner's);
- tries per completed wait: the same tries, less those of the waits still going when the run
  ends (every waiter is in one then, one try or more into it), per successful acquire: what
  a wait costs, without the edge of the run's window;
- waiters never served in the run, and Jain's fairness index over the acquires of each
  waiter: (sum x)^2 / (n * sum x^2), 1 when all got as many, 1/n when one got them all;
- the target: 0.7 / (hold + one round trip), the round trip a PING's p50 measured before.

About 8 s per fleet (--quick: 1 s, rows labelled so). 800 threads on 2 cores start in a few
seconds; only the run itself is measured. py-cachify 3.1.0 cannot wait for a slot: N/A.
"""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
from collections import Counter
from typing import Any

import redis
from harness import GRACE_S, Config, Result, reap

from py_cachify import CachifyPoolFullError, init_cachify

HOLD_S = 0.001
RUN_S, QUICK_RUN_S = 8.0, 1.0
# (label, processes, threads per process, fair)
FLEETS = (('p1x800', 1, 800, False), ('p4x200', 4, 200, False), ('p16x50', 16, 50, False), ('p4x200fair', 4, 200, True))
METRICS = (
    'handovers_per_s',
    'acquire_evalsha',
    'tries_per_wait',
    'evalsha',
    'never_served',
    'jain',
    'target_per_s',
    'of_target',
)
START_TIMEOUT_S = 120.0  # spawning 16 interpreters and 800 threads on a loaded 2-core machine


def herd_worker(url: str, key: str, threads: int, fair: bool, seconds: float, barrier: Any, conn: Any) -> None:
    """One process of the fleet: `threads` waiters looping on the pool; sends their acquires and tries."""
    from py_cachify import CachifyBackendError  # ours only: 3.1.0 has no such error, and runs no fleet

    threading.stack_size(256 * 1024)  # 800 threads of the default 8 MiB each is a lot of address space
    client = redis.Redis.from_url(url, max_connections=threads + 10)  # a connection per thread, and the listener's
    cachify = init_cachify(sync_client=client, is_global=False)
    backend = cachify.settings.backend
    tries: Counter[str] = Counter()
    counting = threading.Lock()
    deadline = [float('inf')]
    run = backend.run
    this_wait = threading.local()  # the acquire tries of the calling waiter's current wait

    def counted(call: Any) -> object:
        if time.monotonic() < deadline[0]:
            with counting:
                tries[call.script] += 1
            if call.script == 'acquire':
                this_wait.tries = getattr(this_wait, 'tries', 0) + 1
        return run(call)

    backend.run = counted  # type: ignore[method-assign]
    acquired = [0] * threads
    errors: list[str] = []
    go = threading.Event()

    def waiter(index: int) -> None:
        go.wait()
        while (left := deadline[0] - time.monotonic()) > 0:
            try:
                with cachify.pool(key, 1, nowait=False, timeout=left, fair=fair):
                    if time.monotonic() < deadline[0]:
                        acquired[index] += 1
                        with counting:
                            tries['completed waits'] += getattr(this_wait, 'tries', 0)
                    this_wait.tries = 0
                    time.sleep(HOLD_S)
            except CachifyPoolFullError:
                return
            except CachifyBackendError as exc:
                errors.append(str(exc))
                return

    workers = [threading.Thread(target=waiter, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    subscribed(cachify, key)
    barrier.wait(timeout=START_TIMEOUT_S)
    deadline[0] = time.monotonic() + seconds
    go.set()
    for worker in workers:
        worker.join(seconds + GRACE_S)
    stuck = sum(w.is_alive() for w in workers)
    conn.send({'acquired': acquired, 'tries': dict(tries), 'stuck': stuck, 'errors': errors[:3], 'failed': len(errors)})
    client.close()


def subscribed(cachify: Any, key: str) -> None:
    """Have the pool's channel subscribed before the start, so the run does not begin with a burst of retries."""
    from py_cachify.ops import pool_keys

    backend = cachify.settings.backend
    channel = pool_keys(cachify.settings.prefix + key).channel
    backend.listen(channel)
    heard = getattr(backend.wakeups, 'heard', None)  # older versions cannot tell: give them a moment
    deadline = time.monotonic() + 10
    while (heard is None or not heard(channel)) and time.monotonic() < deadline:
        time.sleep(0.01 if heard else 0.5)
        if heard is None:
            return


def round_trip_s(url: str) -> float:
    with redis.Redis.from_url(url) as client:
        samples = []
        for _ in range(300):
            start = time.perf_counter()
            client.ping()
            samples.append(time.perf_counter() - start)
    return statistics.median(samples[50:])


def evalsha_calls(client: redis.Redis) -> int:
    stats = client.info('commandstats')
    return int(stats.get('cmdstat_evalsha', {}).get('calls', 0))


def jain(values: list[int]) -> float:
    total, squares = sum(values), sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 0.0


def run_fleet(cfg: Config, label: str, processes: int, threads: int, fair: bool, seconds: float) -> dict[str, float]:
    ctx = multiprocessing.get_context('spawn')
    barrier = ctx.Barrier(processes + 1)
    key = cfg.key(f'herd-{label}')
    pipes = [ctx.Pipe(duplex=False) for _ in range(processes)]
    workers = [
        ctx.Process(target=herd_worker, args=(cfg.url, key, threads, fair, seconds, barrier, theirs))
        for _, theirs in pipes
    ]
    rtt = round_trip_s(cfg.url)
    admin = redis.Redis.from_url(cfg.url)
    try:
        for worker in workers:
            worker.start()
        for _, theirs in pipes:
            theirs.close()  # a worker's death reads as EOF here
        barrier.wait(timeout=START_TIMEOUT_S)
        before = evalsha_calls(admin)
        time.sleep(seconds)
        evalsha = evalsha_calls(admin) - before
        reports = []
        for mine, _ in pipes:
            if not mine.poll(seconds + GRACE_S * 2):
                raise RuntimeError(f'{label}: a waiting process stopped answering')
            reports.append(mine.recv())
    finally:
        reap(workers, GRACE_S)
        admin.close()
    acquired = [n for report in reports for n in report['acquired']]
    tries = Counter()
    for report in reports:
        tries.update(report['tries'])
    served = sum(acquired)
    target = 0.7 / (HOLD_S + rtt)
    return {
        'handovers_per_s': served / seconds,
        'acquire_evalsha': tries['acquire'] / served if served else 0.0,
        'tries_per_wait': tries['completed waits'] / served if served else 0.0,
        'evalsha': evalsha / served if served else 0.0,
        'never_served': float(sum(1 for n in acquired if n == 0)),
        'jain': jain(acquired),
        'target_per_s': target,
        'of_target': served / seconds / target,
        'rtt_ms': rtt * 1000,
        'stuck_threads': float(sum(report['stuck'] for report in reports)),
        'failed_threads': float(sum(report['failed'] for report in reports)),
    }


def herd(cfg: Config) -> Result:
    """10. One slot, hold 1 ms, a crowd of waiters over 1 to 16 processes: hand-overs/s, tries per acquire, fairness."""
    result = Result()
    seconds = QUICK_RUN_S if cfg.quick else RUN_S
    if cfg.side != 'ours':
        reason = 'py-cachify 3.1.0 cannot wait for a slot'
        for label, *_ in FLEETS:
            for metric in METRICS:
                result.na[f'{label}.{metric}'] = reason
        return result
    for label, processes, threads, fair in FLEETS:
        for name, value in run_fleet(cfg, label, processes, threads, fair, seconds).items():
            result.metrics[f'{label}.{name}'] = value
    result.info.update({'hold_s': HOLD_S, 'run_s': seconds})
    return result
