"""The runners' redis-server: found before anything slow starts, and a one-line error if there is none."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ['ServerUnavailable', 'find_binary', 'own_server']


class ServerUnavailable(RuntimeError):
    """No redis-server binary to start: say so in one line and stop."""


def find_binary() -> str:
    """The redis-server a run would start, or ServerUnavailable naming the ways to get one."""
    from tests.redis_server import find_redis_server

    try:
        return find_redis_server()
    except RuntimeError as exc:
        raise ServerUnavailable(f'{exc}; or pass --redis-url') from None


@contextmanager
def own_server() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port, persisting nothing; yields its URL."""
    from tests.redis_server import RedisServer

    with RedisServer(binary=find_binary()) as server:
        yield server.url
