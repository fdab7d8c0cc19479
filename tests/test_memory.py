"""The embedded default: expiry on an injectable clock, and nothing kept past a pool's life."""

from __future__ import annotations

import pytest

from py_cachify import CachifyBackendError, pool
from py_cachify.backends.memory import MemoryBackend
from py_cachify.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_slots_expire_on_the_injected_clock() -> None:
    clock = Clock()
    settings = Settings(MemoryBackend(clock), 'PYC-', default_slot_exp=600)
    p = pool('jobs', max_size=1, settings=settings)
    forever = pool('forever', max_size=1, slot_exp=None, settings=settings)
    p.__enter__()
    forever.__enter__()
    clock.now += 599.9
    assert p.size() == 1
    clock.now += 0.1
    assert p.size() == 0
    with p:
        assert p.size() == 1
    clock.now += 10 * 365 * 86_400
    assert forever.size() == 1


def test_pools_whose_slots_all_expired_are_dropped() -> None:
    clock = Clock()
    backend = MemoryBackend(clock)
    settings = Settings(backend, 'PYC-', default_slot_exp=1)
    for user in range(100):
        pool(f'user-{user}', max_size=1, settings=settings).__enter__()  # abandoned holders
    assert sum(1 for zset in backend._zsets.values() if zset) == 100
    clock.now += 2
    assert pool('other', max_size=1, settings=settings).size() == 0
    assert backend._zsets == {}
    assert backend._expiry == {}


def test_a_clock_that_reads_zero_is_an_error() -> None:
    p = pool('k', max_size=1, settings=Settings(MemoryBackend(lambda: 0.0), 'PYC-', 600))
    with pytest.raises(CachifyBackendError, match='clock'), p:
        pass
    with pytest.raises(CachifyBackendError, match='clock'):
        p.size()
