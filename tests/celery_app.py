"""The Celery app a real worker runs in tests/test_celery.py: pooled tasks that count their own concurrency.

Configured from the environment (set by the test before it starts the worker):
PYC_CELERY_REDIS is the base URL of the suite's redis-server; the broker uses db 1, results
db 2, pools and counters db 3. Each body counts itself in and out of its key with one Lua
script (INCR, and a peak kept with it atomically), independent of the pool it tests.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import redis
import redis.asyncio
from celery import Celery

from py_cachify import Cachify, CachifyPoolFullError
from py_cachify.celery import retry_on_full

BASE = os.environ.get('PYC_CELERY_REDIS', 'redis://127.0.0.1:6390')
PREFIX = 'celery-test-'
MAX = 2  # every pool's max_size
ASYNC_CLIENT_NAME = 'pyc-async'  # names the asyncio client's connections in CLIENT LIST

app = Celery('py_cachify_tests', broker=f'{BASE}/1', backend=f'{BASE}/2')
app.conf.update(
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=600,
    task_default_queue='py_cachify_tests',
)

store = redis.Redis.from_url(f'{BASE}/3')
# The pools of the sync tasks: both clients, as a typical worker configures them (an instance
# rather than init_cachify(), so the test process importing this keeps its own global).
cachify = Cachify(store, redis.asyncio.Redis.from_url(f'{BASE}/3'), prefix=PREFIX, default_pool_slot_expiration=60)
pooled = cachify.pooled
# The async tasks: a module-level asyncio client only, used by asyncio.run() in every task.
async_cachify = Cachify(
    async_client=redis.asyncio.Redis.from_url(f'{BASE}/3?client_name={ASYNC_CLIENT_NAME}'),
    prefix=PREFIX,
    default_pool_slot_expiration=60,
)

_ENTER = store.register_script(
    """
    local now = redis.call('INCR', KEYS[1])
    redis.call('INCR', KEYS[3])
    if now > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], now) end
    return now
    """
)


def counter_keys(key: str) -> list[str]:
    """The keys counting `key`'s bodies: running now, the most at once, and runs in all."""
    return [f'{PREFIX}count:{key}:now', f'{PREFIX}count:{key}:peak', f'{PREFIX}count:{key}:runs']


def _body(key: str, hold: float) -> None:
    """Count in, hold `hold` s and until `MAX` bodies of `key` ran at once (10 s at most), count out.

    Waiting for the peak makes "the pool admits exactly max_size" checkable without luck:
    enough tasks are queued that a second holder always comes.
    """
    now_key, peak_key, _ = keys = counter_keys(key)
    _ENTER(keys=keys)
    try:
        time.sleep(hold)
        deadline = time.monotonic() + 10
        while int(store.get(peak_key) or 0) < MAX and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        store.decr(now_key)


@app.task
def ping() -> str:
    """A round trip: the worker is up and consuming."""
    return 'pong'


@app.task(bind=True)
@pooled('wait-{key}', MAX, nowait=False, timeout=120)
def waiting(self: Any, key: str, i: int, hold: float) -> int:
    """Waits for a slot inside the worker (holding the worker's process or thread meanwhile)."""
    _body(key, hold)
    return i


@app.task(bind=True)
@pooled('retry-{key}', MAX, on_full=retry_on_full(countdown=0.05, jitter=0.2))
def retrying(self: Any, key: str, i: int, hold: float) -> int:
    """Goes back to the broker when the pool is full, for as long as it stays full."""
    _body(key, hold)
    return i


@app.task(bind=True, autoretry_for=(CachifyPoolFullError,), max_retries=None, retry_kwargs={'countdown': 0.1})
@pooled('auto-{key}', MAX, raise_on_full=True)
def autoretrying(self: Any, key: str, i: int, hold: float) -> int:
    """Raises CachifyPoolFullError when full, and Celery's autoretry sends it back to the broker."""
    _body(key, hold)
    return i


_retry_later = retry_on_full(countdown=0.05, jitter=0.05)


def _count_full(self: Any, key: str) -> None:
    store.incr(f'{PREFIX}full:{key}')
    _retry_later(self, key)


@app.task(bind=True)  # Celery's default max_retries (3) stays: retry_on_full() must not stop at it
@pooled('busy-{key}', MAX, on_full=_count_full)
def retries_past_default(self: Any, key: str) -> int:
    """Counts each full pool it meets; returns how many retries it took."""
    return int(self.request.retries)


@app.task(bind=True)
@pooled('bounded-{key}', MAX, on_full=retry_on_full(countdown=0.05, jitter=0.05, max_retries=2))
def bounded(self: Any, key: str) -> int:
    """Gives up with MaxRetriesExceededError after 2 retries."""
    return int(self.request.retries)


@app.task(bind=True)
@pooled('kill-{key}', 1, slot_exp=2, auto_renew=True)
def hold_until_killed(self: Any, key: str) -> None:
    """Says which process holds the slot, then holds it until the test SIGKILLs that process."""
    store.set(f'{PREFIX}pid:{key}', os.getpid())
    time.sleep(120)


@async_cachify.pooled('async-{key}', MAX, nowait=False, timeout=120)
async def _async_work(key: str, i: int, hold: float) -> int:
    now_key, peak_key, _ = keys = counter_keys(key)
    _ENTER(keys=keys)
    try:
        await asyncio.sleep(hold)
        deadline = time.monotonic() + 10
        while int(store.get(peak_key) or 0) < MAX and time.monotonic() < deadline:  # noqa: ASYNC110 - the peak is in Redis
            await asyncio.sleep(0.01)
    finally:
        store.decr(now_key)
    return i


@app.task(bind=True)
def async_task(self: Any, key: str, i: int, hold: float) -> int:
    """Async code in a task: a fresh event loop per task, with the module-level asyncio client."""
    return asyncio.run(_async_work(key, i, hold))
