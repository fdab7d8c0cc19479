"""What pools, locks and the cache run on (backend, key prefix, defaults) and the global default."""

from __future__ import annotations

from dataclasses import dataclass

from .backends import Backend
from .errors import CachifyInitError
from .ops import SlotExp

__all__ = ['Settings', 'current', 'install']


@dataclass(frozen=True)
class Settings:
    """The configuration one `Cachify` gives its pools, locks and cached functions."""

    backend: Backend
    prefix: str
    default_slot_exp: SlotExp
    default_lock_exp: SlotExp = 30  # seconds a lock lives unless `exp` says; None = until released
    default_cache_ttl: int | None = None  # seconds a cached value lives unless `ttl` says; None = ever
    lock_poll_interval: float = 0.1  # a waiting lock (or cache) waiter's fallback poll, in seconds


_global: Settings | None = None


def install(settings: Settings) -> Settings | None:
    """Make `settings` what module-level `pool` / `pooled` use from now on; returns the replaced ones."""
    global _global
    replaced, _global = _global, settings
    return replaced


def current() -> Settings:
    """The global settings; raises `CachifyInitError` before `init_cachify()`."""
    if _global is None:
        # The wording of py-cachify 3.1.0's message too, which callers may match.
        raise CachifyInitError(
            'py_cachify is not initialized: call init_cachify() first '
            '(Cachify is not initialized, did you forget to call `init_cachify`?)'
        )
    return _global
