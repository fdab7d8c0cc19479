"""The exceptions py_cachify raises; each one that concerns a pool names it."""

from __future__ import annotations

from redis.exceptions import RedisError

__all__ = ['CachifyBackendError', 'CachifyError', 'CachifyInitError', 'CachifyLockError', 'CachifyPoolFullError']


class CachifyError(Exception):
    """Base class of every py_cachify error."""


class CachifyInitError(CachifyError):
    """The library is used before `init_cachify()`, or without the client the call needs."""


class CachifyPoolFullError(CachifyError):
    """Every slot of the pool is taken.

    Raised only when the pool answered "full": a Redis failure is a `CachifyBackendError`.
    The pools raise it with the pool's `key` and `max_size`; your own code may raise it with
    a message alone, `CachifyPoolFullError('no room')`, as py-cachify 3.1.0 allows (`key` and
    `max_size` are None then).
    """

    key: str | None
    max_size: int | None

    def __init__(self, key_or_message: str, max_size: int | None = None) -> None:
        if max_size is None:
            super().__init__(key_or_message)
            self.key = None
        else:
            super().__init__(f'pool {key_or_message!r} is full (max_size={max_size})')
            self.key = key_or_message
        self.max_size = max_size

    def __reduce__(self) -> tuple[type[CachifyPoolFullError], tuple[str, int | None]]:
        # Rebuilt from what it was made of, so it crosses process boundaries unchanged.
        return type(self), (self.args[0] if self.key is None else self.key, self.max_size)


class CachifyLockError(CachifyError):
    """A lock is held by someone else: taken with `nowait=True`, or not freed within `timeout`.

    `key` is the lock's key as given (None when your own code raises it with a message alone).
    """

    key: str | None

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key

    def __reduce__(self) -> tuple[type[CachifyLockError], tuple[str, str | None]]:
        return type(self), (self.args[0], self.key)


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
