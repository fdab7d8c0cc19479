"""The exceptions py_cachify raises; each one that concerns a pool names it."""

from __future__ import annotations

from redis.exceptions import RedisError

__all__ = ['CachifyBackendError', 'CachifyError', 'CachifyInitError', 'CachifyPoolFullError']


class CachifyError(Exception):
    """Base class of every py_cachify error."""


class CachifyInitError(CachifyError):
    """The library is used before `init_cachify()`, or without the client the call needs."""


class CachifyPoolFullError(CachifyError):
    """Every slot of the pool is taken.

    Raised only when the pool answered "full": a Redis failure is a `CachifyBackendError`.
    """

    def __init__(self, key: str, max_size: int) -> None:
        super().__init__(f'pool {key!r} is full (max_size={max_size})')
        self.key = key
        self.max_size = max_size


class CachifyBackendError(CachifyError, RedisError):
    """The store behind a pool failed (connection refused, timeout, WRONGTYPE, ...).

    It is also a `redis.exceptions.RedisError`, so code that catches Redis errors keeps
    working; the original error is `__cause__`. `transient` is True when the failure may pass
    by itself (connection lost, timeout, failover in progress): the same call may succeed later.
    """

    def __init__(self, key: str, message: str, *, transient: bool = False) -> None:
        super().__init__(f'pool {key!r}: {message}')
        self.key = key
        self.transient = transient
