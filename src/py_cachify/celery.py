"""Celery integration: an `on_full` that retries the task later instead of letting it succeed unrun.

Imported only by those who use it; it does not import Celery itself either (the task is
duck-typed), so Celery stays an optional dependency of the application.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

__all__ = ['retry_on_full']


class _Request(Protocol):
    retries: int


class _BoundTask(Protocol):
    """What we use of a bound Celery task (`@app.task(bind=True)` passes it as `self`)."""

    request: _Request

    def retry(self, *, countdown: float, max_retries: int) -> BaseException: ...


def retry_on_full(
    countdown: float = 1.0, jitter: float = 1.0, max_retries: int | None = None
) -> Callable[..., NoReturn]:
    """An `on_full` for a bound Celery task: when the pool is full, retry the task later.

    Use it under `@app.task(bind=True)`::

        @app.task(bind=True)
        @pooled('api-{user}', max_size=2, on_full=retry_on_full(countdown=1, jitter=1))
        def call_api(self, user): ...

    The task goes back to the broker to run again after `countdown` seconds plus a random
    `0..jitter` (so retried tasks do not all come back at the same moment), and the worker
    is free meanwhile. `max_retries=None` (the default) retries for as long as the pool
    stays full, whatever the task's own `max_retries` (Celery's default of 3 would fail
    tasks with `MaxRetriesExceededError` just for meeting a busy pool); an int bounds the
    retries, counted as Celery counts them (every retry of the task).

    Raises `TypeError` / `ValueError` for bad arguments here; the returned function raises
    `TypeError` if the decorated task is not bound (its first argument has no `retry`).
    """
    countdown = _seconds(countdown, 'countdown')
    jitter = _seconds(jitter, 'jitter')
    if max_retries is not None and (isinstance(max_retries, bool) or not isinstance(max_retries, int)):
        raise TypeError(
            f'max_retries must be an int >= 0 or None (retry as long as the pool is full), got {max_retries!r}'
        )
    if max_retries is not None and max_retries < 0:
        raise ValueError(f'max_retries must be an int >= 0 or None, got {max_retries!r}')

    def on_full(*args: Any, **kwargs: Any) -> NoReturn:
        task = args[0] if args else None
        if not (callable(getattr(task, 'retry', None)) and hasattr(task, 'request')):
            raise TypeError(
                'retry_on_full() needs a bound task, @app.task(bind=True), whose first argument is the task; '
                f'got {task!r}'
            )
        bound: _BoundTask = task  # type: ignore[assignment]
        # Celery reads max_retries=None as "the task's default", never as unlimited: one more
        # than the retries so far is never exceeded.
        limit = bound.request.retries + 1 if max_retries is None else max_retries
        try:
            # retry() raises Celery's Retry (or MaxRetriesExceededError past the limit) itself.
            raise bound.retry(countdown=countdown + random.uniform(0, jitter), max_retries=limit)
        finally:
            # retry(max_retries=...) leaves it on the shared task object, where a later
            # autoretry of the task (any call, any thread) would take it for its own limit.
            vars(bound).pop('override_max_retries', None)

    return on_full


def _seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{name} must be a number of seconds >= 0, got {value!r}')
    if not math.isfinite(value) or value < 0:
        raise ValueError(f'{name} must be a number of seconds >= 0, got {value!r}')
    return float(value)
