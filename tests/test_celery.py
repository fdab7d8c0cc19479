"""Pools in a real Celery worker (prefork and threads) on a redis-server of the suite's own.

The worker runs tests/celery_app.py as a subprocess in a process group of its own; the
broker, the results and the pools all live on the server this module starts. Concurrency is
measured by each task body counting itself in Redis, independently of the pool under test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from py_cachify import pool
from py_cachify.celery import retry_on_full

from .redis_server import RedisServer
from .waiting import wait_until

celery = pytest.importorskip('celery')

ROOT = Path(__file__).resolve().parent.parent
TASKS, KEYS = 40, 2
HOLD = 0.2  # seconds each body holds its slot at least


class Worker:
    """A `celery worker` subprocess and the app, as the test process sees it."""

    def __init__(self, kind: str, process: subprocess.Popen[bytes], app: Any, module: Any) -> None:
        self.kind = kind
        self.process = process
        self.app = app
        self.tasks = module

    def children(self) -> list[int]:
        """The PIDs of the worker's pool processes (prefork)."""
        out = subprocess.run(['ps', '-o', 'pid=', '--ppid', str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the worker's whole process group: politely, then for good."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(20)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # pool children left behind, if any
    process.wait()


@pytest.fixture(scope='module')
def server() -> Iterator[RedisServer]:
    with RedisServer() as started:
        yield started


@pytest.fixture(scope='module', params=['prefork', 'threads'])
def worker(request: pytest.FixtureRequest, server: RedisServer) -> Iterator[Worker]:
    base = f'redis://127.0.0.1:{server.port}'
    os.environ['PYC_CELERY_REDIS'] = base
    import tests.celery_app as module  # reads PYC_CELERY_REDIS: the same server for every worker

    assert base == module.BASE, 'tests.celery_app was imported before this module configured it'
    concurrency = '4' if request.param == 'prefork' else '8'
    process = subprocess.Popen(
        [
            *(sys.executable, '-m', 'celery', '-A', 'tests.celery_app', 'worker', f'--pool={request.param}'),
            *('-c', concurrency, '--loglevel=WARNING', '--without-gossip', '--without-mingle', '--without-heartbeat'),
            *('-n', f'pyc-{request.param}-{uuid.uuid4().hex[:8]}@%h'),
        ],
        cwd=ROOT,  # `tests.celery_app` is imported from here; py_cachify as this process finds it
        start_new_session=True,  # its own process group: stopped whole in the finally below
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Up and consuming: a task's round trip, with a generous deadline for a loaded machine.
        assert module.ping.delay().get(timeout=60) == 'pong'
        yield Worker(request.param, process, module.app, module)
    finally:
        _stop(process)
        module.store.flushdb()  # the next worker starts with nothing queued or counted


def _run_many(worker: Worker, task: Any) -> tuple[list[str], float]:
    """Send TASKS tasks spread over KEYS keys; wait for all; return the keys and the wall time."""
    keys = [f'{task.__name__}-{uuid.uuid4().hex[:8]}-{k}' for k in range(KEYS)]
    started = time.monotonic()
    results = [task.delay(keys[i % KEYS], i, HOLD) for i in range(TASKS)]
    assert [r.get(timeout=120) for r in results] == list(range(TASKS))  # every task ran and succeeded
    return keys, time.monotonic() - started


def _assert_exact_peak(worker: Worker, keys: list[str], what: str, elapsed: float) -> None:
    store = worker.tasks.store
    for key in keys:
        now, peak, runs = (int(store.get(k) or 0) for k in worker.tasks.counter_keys(key))
        assert (peak, runs, now) == (worker.tasks.MAX, TASKS // KEYS, 0), key
    print(
        f'\n{worker.kind} worker, {what}: {TASKS} tasks on {KEYS} keys (max_size={worker.tasks.MAX}) in {elapsed:.2f} s'
    )


@pytest.mark.slow
def test_waiting_in_the_worker_never_exceeds_max_size_and_runs_every_task(worker: Worker) -> None:
    keys, elapsed = _run_many(worker, worker.tasks.waiting)
    _assert_exact_peak(worker, keys, 'waiting for a slot', elapsed)


@pytest.mark.slow
def test_retry_on_full_sends_tasks_back_until_each_ran(worker: Worker) -> None:
    keys, elapsed = _run_many(worker, worker.tasks.retrying)
    _assert_exact_peak(worker, keys, 'retry_on_full', elapsed)


@pytest.mark.slow
def test_raise_on_full_with_autoretry_for(worker: Worker) -> None:
    keys, elapsed = _run_many(worker, worker.tasks.autoretrying)
    _assert_exact_peak(worker, keys, 'raise_on_full + autoretry_for', elapsed)


@pytest.mark.slow
def test_async_tasks_with_asyncio_run_per_task(worker: Worker) -> None:
    keys, elapsed = _run_many(worker, worker.tasks.async_task)
    _assert_exact_peak(worker, keys, 'asyncio.run() per task', elapsed)

    # Each task's loop closed its connections with it: none of the asyncio client's is left.
    def named() -> list[dict[str, Any]]:
        clients = worker.tasks.store.client_list()
        return [c for c in clients if c.get('name') == worker.tasks.ASYNC_CLIENT_NAME]

    wait_until(lambda: not named(), what=f'connections of the asyncio client left open: {named()}')


@pytest.mark.slow
def test_retry_on_full_retries_past_the_tasks_max_retries(worker: Worker) -> None:
    key = uuid.uuid4().hex
    tasks = worker.tasks
    held = [tasks.cachify.pool(f'busy-{key}-pool', tasks.MAX, 60).acquire() for _ in range(tasks.MAX)]
    try:
        result = tasks.retries_past_default.delay(key)
        # Celery's default limit is 3 retries: go well past it while the pool stays full.
        wait_until(lambda: int(tasks.store.get(f'{tasks.PREFIX}full:{key}') or 0) >= 6, what='six full pools met')
    finally:
        for lease in held:
            lease.release()
    assert result.get(timeout=60) >= 6


@pytest.mark.slow
def test_retry_on_full_with_max_retries_gives_up(worker: Worker) -> None:
    key = uuid.uuid4().hex
    tasks = worker.tasks
    held = [tasks.cachify.pool(f'bounded-{key}-pool', tasks.MAX, 60).acquire() for _ in range(tasks.MAX)]
    try:
        with pytest.raises(celery.exceptions.MaxRetriesExceededError):
            tasks.bounded.delay(key).get(timeout=60)
    finally:
        for lease in held:
            lease.release()


@pytest.mark.slow
def test_a_sigkilled_childs_slot_comes_back_within_slot_exp(worker: Worker) -> None:
    if worker.kind != 'prefork':
        pytest.skip('a child process to kill: prefork only')
    key = uuid.uuid4().hex
    tasks = worker.tasks
    slots = tasks.cachify.pool(f'kill-{key}-pool', 1)
    tasks.hold_until_killed.delay(key)
    wait_until(lambda: tasks.store.get(f'{tasks.PREFIX}pid:{key}'), what='the task took its slot')
    pid = int(tasks.store.get(f'{tasks.PREFIX}pid:{key}'))
    # auto_renew keeps the 2 s slot alive well past 2 s while the child lives.
    renewed = time.monotonic() + 3
    wait_until(lambda: time.monotonic() > renewed and slots.size() == 1, what='the slot renewed past slot_exp')
    assert pid in worker.children()
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: slots.size() == 0, what='the killed child slot expired')
    back = time.monotonic() - killed
    print(f'\nslot back {back:.2f} s after SIGKILL of the holding child (slot_exp=2, auto_renew=True)')
    assert back <= 2 + 3  # slot_exp, plus room for a loaded machine; not the 600 s default


def test_importing_py_cachify_never_imports_celery() -> None:
    code = textwrap.dedent(
        """
        import sys, pkgutil, importlib
        import py_cachify
        for info in pkgutil.walk_packages(py_cachify.__path__, 'py_cachify.'):
            importlib.import_module(info.name)
        loaded = sorted(m for m in sys.modules if m == 'celery' or m.startswith(('celery.', 'kombu', 'billiard')))
        assert not loaded, loaded
        """
    )
    subprocess.run([sys.executable, '-c', code], check=True, timeout=60)


def test_a_decorator_over_a_celery_task_is_refused_naming_the_right_order() -> None:
    from py_cachify import cached, init_cachify, lock, once, pooled

    app = celery.Celery('order-check', broker='memory://', backend='cache+memory://', set_as_current=False)
    init_cachify(is_global=False)
    decorators = {
        'pooled': pooled('k', 2),
        'pool.pooled': pool('k', 2).pooled(),
        'lock': lock('k'),
        'once': once('k'),
        'cached': cached('k'),
    }
    for name, decorate in decorators.items():

        def body(self: Any, x: int) -> int:
            return x

        task = app.task(bind=True, name=f'order-{name}')(body)
        with pytest.raises(TypeError, match=r'below the task decorator') as info:
            decorate(task)
        assert '@app.task' in str(info.value), name

    # The right order: the task is a task still, and its body is the pooled function.
    @app.task(bind=True, name='order-right')
    @pooled('right-{x}', 2)
    def right(self: Any, x: int) -> int:
        return x

    assert callable(right.delay)
    assert right.run.__wrapped__.__name__ == 'right'


def test_retry_on_full_checks_its_arguments_and_its_task() -> None:
    for bad in ({'countdown': -1}, {'jitter': float('nan')}, {'max_retries': -1}):
        with pytest.raises(ValueError, match=repr(next(iter(bad.values())))):
            retry_on_full(**bad)
    for bad in ({'countdown': '1'}, {'jitter': True}, {'max_retries': 1.5}):
        with pytest.raises(TypeError, match=repr(next(iter(bad.values())))):
            retry_on_full(**bad)
    with pytest.raises(TypeError, match=r'bind=True'):
        retry_on_full()('not-a-task', 1)
