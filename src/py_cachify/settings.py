"""What a pool runs on (backend, key prefix, default slot lifetime) and the global default."""

from __future__ import annotations

from dataclasses import dataclass

from .backends import Backend
from .errors import CachifyInitError
from .ops import SlotExp

__all__ = ['Settings', 'current', 'install']


@dataclass(frozen=True)
class Settings:
    """The configuration one `Cachify` gives its pools."""

    backend: Backend
    prefix: str
    default_slot_exp: SlotExp


_global: Settings | None = None


def install(settings: Settings) -> Settings | None:
    """Make `settings` what module-level `pool` / `pooled` use from now on; returns the replaced ones."""
    global _global
    replaced, _global = _global, settings
    return replaced


def current() -> Settings:
    """The global settings; raises `CachifyInitError` before `init_cachify()`."""
    if _global is None:
        raise CachifyInitError('py_cachify is not initialized: call init_cachify() first')
    return _global
