"""Scenario 11: 1 to 8 processes entering and exiting back to back, on one pool and on a pool each (issue 11).

Eight spawned processes, each with one sync client, serve every cell; a cell is N processes
(1, 2, 4, 8) on one of two layouts: one shared pool of 64 slots, or a pool of 64 per process
(distinct keys). The N start together at a barrier and loop `with pool(...): pass` for the
run (2 s; --quick 0.3 s, rows labelled so), trying again at once after a "full" answer. Only
the API both libraries share, so py-cachify 3.1.0 runs the same code.

Per cell:
- enters/s: successful enters of each process over its own time from the start to the end of
  its loop (a 3.1.0 pair may block on its meta-lock past the deadline), summed;
- "full" answers in the run, and errors of any other kind;
- over-admissions: a holder counter per pool in shared memory, raised strictly inside the
  `with` under its lock (as scenario 5 does), so it never overstates; its highest value minus
  max_size, at least 0;
- Redis CPU per successful pair, two ways, each with its projected ceiling of one Redis core,
  1e6 / (µs per pair) pairs/s:
  - commandstats: the `INFO commandstats` usec delta over the cell, summed over the commands
    the clients sent (counted in each process around redis-py's `execute_command`). Not over
    every row: Redis records a command a script calls in its own row *and* inside the
    EVALSHA's usec, so the sum of all rows would count ours' scripts' work twice (3.1.0 runs
    plain commands, no scripts). Command execution only: reading, parsing and answering a
    request is not in it, and 3.1.0 sends 8 requests per pair where ours sends 2;
  - main-thread CPU: the delta of `used_cpu_user_main_thread` + `used_cpu_sys_main_thread`
    (the process's figures on a Redis without them), which includes all of that, and a
    little of the server's own housekeeping.

The server must carry nothing else while a cell runs: the runner runs one scenario process at
a time, and each cell checks it. Signs of other clients are summed into `foreign_calls`, which
must be 0: a count per command our clients sent that does not match the server's; any command
at all besides our INFO when no script ran; a new connection; and a connection not ours that
was busy in the cell's last whole second or so (CLIENT LIST's idle counts whole seconds, so
--quick's 0.3 s cells cannot tell). Commands that ours' scripts call cannot be told from the
commands of another client that connected before the cell and went quiet before its end; they
are in `info` as commands run inside scripts per pair. Nothing on the server is reset.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections import Counter
from typing import Any

import redis
from harness import GRACE_S, Config, Result, reap

from py_cachify import CachifyPoolFullError, init_cachify, pool

COUNTS = (1, 2, 4, 8)
LAYOUTS = ('shared', 'distinct')  # one pool of MAX_SIZE for all N, or one each
MAX_SIZE = 64
RUN_S, QUICK_RUN_S = 2.0, 0.3
WARMUP_PAIRS = 20  # connect, load the scripts and make the pool's keys before the cell's snapshot
START_TIMEOUT_S = 120.0  # spawning 8 interpreters on a loaded 2-core machine
SCRIPTED = frozenset({'EVAL', 'EVALSHA', 'EVAL_RO', 'EVALSHA_RO', 'FCALL', 'FCALL_RO'})
ADMIN_INFOS = 2  # the before snapshot's two INFO calls, which the after snapshot counts
WORKER_NAME = 'bench-fleet'  # CLIENT SETNAME of the workers' connections: any other is not ours


def count_commands(sent: Counter[str]) -> None:
    """Count every command this process's sync clients send, by name as INFO commandstats groups them."""
    original = redis.Redis.execute_command

    def execute_command(self: redis.Redis, *args: Any, **options: Any) -> Any:
        # 'SCRIPT LOAD' is the row script|load: count it under its first word, as rows are grouped.
        sent[str(args[0]).split(' ', 1)[0].upper()] += 1
        return original(self, *args, **options)

    redis.Redis.execute_command = execute_command  # type: ignore[method-assign]


def fleet_worker(url: str, barriers: dict[int, Any], holders: list[Any], highest: list[Any], conn: Any) -> None:
    """One process of the fleet: runs each cell the parent sends, reports its counts, until told to stop."""
    sent: Counter[str] = Counter()
    count_commands(sent)
    client = redis.Redis.from_url(url, client_name=WORKER_NAME)
    init_cachify(sync_client=client)
    try:
        client.ping()  # connected before any cell's snapshot
        conn.send('up')  # and done importing, which would take CPU from the first cells
        while (order := conn.recv())[0] == 'run':
            _, key, n, counter, seconds = order
            conn.send(run_cell(key, barriers[n], holders[counter], highest[counter], seconds, sent))
    finally:
        client.close()


def run_cell(key: str, barrier: Any, holders: Any, highest: Any, seconds: float, sent: Counter[str]) -> dict[str, Any]:
    p = pool(key=key, max_size=MAX_SIZE)
    for _ in range(WARMUP_PAIRS):
        with p:
            pass
    barrier.wait(timeout=START_TIMEOUT_S)  # the parent takes its snapshot between the two waits
    sent.clear()
    barrier.wait(timeout=START_TIMEOUT_S)
    enters = full = errors = 0
    first_error = None
    lock = holders.get_lock()
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        try:
            with p:
                # Strictly inside the with: never more than the real holders, so above
                # MAX_SIZE is a real over-admission.
                with lock:
                    holders.value += 1
                    if holders.value > highest.value:
                        highest.value = holders.value
                try:
                    enters += 1
                finally:
                    with lock:
                        holders.value -= 1
        except CachifyPoolFullError:
            full += 1
        except Exception as exc:  # counted and shown; the run goes on
            errors += 1
            first_error = first_error or repr(exc)
    return {
        'enters': enters,
        'full': full,
        'errors': errors,
        'first_error': first_error,
        # A 3.1.0 pair can block on its meta-lock past the deadline: each process's own span.
        'elapsed': time.perf_counter() - start,
        'sent': dict(sent),
    }


Snapshot = tuple[dict[str, tuple[int, int]], int, float]


def snapshot(admin: redis.Redis) -> Snapshot:
    """(calls, usec) per command name (subcommands summed into theirs), connections so far, and CPU in µs."""
    rows: dict[str, tuple[int, int]] = {}
    for row, stats in admin.info('commandstats').items():
        name = row.removeprefix('cmdstat_').split('|', 1)[0].upper()
        calls, usec = rows.get(name, (0, 0))
        rows[name] = (calls + int(stats['calls']), usec + int(stats['usec']))
    info = admin.info()  # default sections hold stats and cpu; naming several needs Redis 7
    # The main thread's where Redis reports it (6.2+ on Linux): the one core a ceiling is about.
    cpu = sum(info.get(f'{k}_main_thread', info[k]) for k in ('used_cpu_user', 'used_cpu_sys'))
    return rows, int(info['total_connections_received']), cpu * 1e6


def server_figures(before: Snapshot, after: Snapshot, sent: Counter[str]) -> dict[str, float]:
    """Redis CPU of the commands the clients sent, commands run inside scripts, and other clients' commands."""
    (rows0, connections0, cpu0), (rows1, connections1, cpu1) = before, after
    delta = {}
    for name, (calls, usec) in rows1.items():
        calls0, usec0 = rows0.get(name, (0, 0))
        if calls > calls0:
            delta[name] = (calls - calls0, usec - usec0)
    usec = sum(delta.get(name, (0, 0))[1] for name in sent)
    foreign = sum(abs(delta.get(name, (0, 0))[0] - n) for name, n in sent.items())
    foreign += abs(delta.get('INFO', (0, 0))[0] - ADMIN_INFOS) * ('INFO' not in sent)
    foreign += connections1 - connections0
    inside = sum(calls for name, (calls, _) in delta.items() if name not in sent and name != 'INFO')
    if not SCRIPTED & set(sent):
        foreign += inside  # no script ran: no command may have run but the clients' own
        inside = 0
    return {'usec': usec, 'cpu_us': cpu1 - cpu0, 'foreign_calls': foreign, 'inside_scripts': inside}


def fleet(cfg: Config) -> Result:
    """11. N processes back to back on one pool of 64 and on a pool each: enters/s, Redis CPU per pair, ceiling."""
    seconds = QUICK_RUN_S if cfg.quick else RUN_S
    ctx = multiprocessing.get_context('spawn')  # a clean interpreter per worker, no inherited sockets
    most = max(COUNTS)
    barriers = {n: ctx.Barrier(n + 1) for n in COUNTS}
    holders = [ctx.Value('i', 0) for _ in range(most)]
    highest = [ctx.Value('i', 0) for _ in range(most)]
    pipes = [ctx.Pipe() for _ in range(most)]
    workers = [
        ctx.Process(target=fleet_worker, args=(cfg.url, barriers, holders, highest, theirs)) for _, theirs in pipes
    ]
    result = Result()
    admin = redis.Redis.from_url(cfg.url)
    admin_id = admin.client_id()  # connect now: a connection made during a cell would read as another client's
    try:
        for worker in workers:
            worker.start()
        for mine, _ in pipes:
            if not mine.poll(START_TIMEOUT_S) or mine.recv() != 'up':
                raise RuntimeError('fleet: a process did not start')
        for n in COUNTS:
            for layout in LAYOUTS:
                figures, info = run_layout(
                    cfg, admin, admin_id, layout, n, seconds, barriers[n], pipes, holders, highest
                )
                result.metrics.update({f'{layout}.p{n}.{name}': value for name, value in figures.items()})
                result.info[f'{layout}.p{n}'] = info
    finally:
        for mine, _ in pipes:
            with contextlib.suppress(OSError):  # that worker is gone already
                mine.send(('stop',))
        reap(workers, GRACE_S)
        admin.close()
    result.metrics['foreign_calls'] = sum(
        result.info[f'{layout}.p{n}']['foreign_calls'] for layout in LAYOUTS for n in COUNTS
    )
    result.metrics['errors'] = sum(result.metrics[f'{layout}.p{n}.errors'] for layout in LAYOUTS for n in COUNTS)
    result.info.update({'run_s': seconds, 'max_size': MAX_SIZE, 'processes': list(COUNTS)})
    return result


def run_layout(
    cfg: Config,
    admin: redis.Redis,
    admin_id: int,
    layout: str,
    n: int,
    seconds: float,
    barrier: Any,
    pipes: list[tuple[Any, Any]],
    holders: list[Any],
    highest: list[Any],
) -> tuple[dict[str, float], dict[str, Any]]:
    shared = layout == 'shared'
    for i in range(n):
        counter = 0 if shared else i  # one counter per pool
        holders[counter].value = highest[counter].value = 0
        key = cfg.key(f'fleet-p{n}-shared' if shared else f'fleet-p{n}-{i}')
        pipes[i][0].send(('run', key, n, counter, seconds))
    barrier.wait(timeout=START_TIMEOUT_S)  # all N warmed up and waiting
    began, before = int(time.time()), snapshot(admin)
    barrier.wait(timeout=START_TIMEOUT_S)  # go
    reports = []
    for mine, _ in pipes[:n]:
        if not mine.poll(seconds + START_TIMEOUT_S + GRACE_S):
            raise RuntimeError(f'fleet {layout} x{n}: a process stopped answering')
        reports.append(mine.recv())
    after = snapshot(admin)
    others = [c for c in admin.client_list() if c['name'] != WORKER_NAME and int(c['id']) != admin_id]
    ended = int(time.time())
    # Idle counts whole seconds of the server's clock, which this one's seconds may straddle:
    # a connection idle for less than the cell's whole seconds less one was busy during the cell.
    active = sum(1 for c in others if int(c['idle']) < ended - began - 1)
    sent: Counter[str] = Counter()
    for report in reports:
        sent.update(report['sent'])
    server = server_figures(before, after, sent)
    pairs = sum(report['enters'] for report in reports)
    seen = max(highest[0 if shared else i].value for i in range(n))
    figures: dict[str, float] = {
        'enters_per_s': sum(report['enters'] / report['elapsed'] for report in reports),
        'full': sum(report['full'] for report in reports),
        'errors': sum(report['errors'] for report in reports),
        'over_admitted': max(0, seen - MAX_SIZE),
    }
    for prefix, spent in (('', server['usec']), ('cpu_', server['cpu_us'])):
        if pairs and spent > 0:
            figures[f'{prefix}pair_us'] = spent / pairs
            figures[f'{prefix}ceiling_per_s'] = 1e6 / figures[f'{prefix}pair_us']
    info = {
        'most_holders': seen,
        'pairs': pairs,
        'commands_sent_per_pair': {name: count / pairs for name, count in sorted(sent.items())} if pairs else {},
        'inside_scripts_per_pair': server['inside_scripts'] / pairs if pairs else None,
        'foreign_calls': server['foreign_calls'] + active,
        'other_clients_active': active,
        'first_error': next((r['first_error'] for r in reports if r['first_error']), None),
    }
    return figures, info
