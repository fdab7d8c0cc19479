"""The pool operations as data: validated arguments in, script calls out, replies parsed.

Nothing here does I/O. The Redis backend sends a `Call` as one EVALSHA of the Lua script
of the same name; the embedded backend runs its Python twin of that script. Both give the
same raw reply, and the functions below turn it into a result or an exception, once.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Final, Literal

from .errors import CachifyBackendError

__all__ = [
    'UNSET',
    'Call',
    'ScriptName',
    'SlotExp',
    'UnsetType',
    'acquire_call',
    'acquired',
    'count',
    'new_slot_id',
    'pool_keys',
    'purge_call',
    'release_call',
    'released',
    'size_call',
    'ttl_ms',
    'validate_key',
    'validate_max_size',
    'validate_slot_exp',
]


class UnsetType:
    """Type of `UNSET`: "not given, use the configured default"."""

    _instance: UnsetType | None = None

    def __new__(cls) -> UnsetType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return 'UNSET'

    def __bool__(self) -> bool:
        return False


UNSET: Final = UnsetType()

SlotExp = int | float | None
ScriptName = Literal['acquire', 'release', 'size', 'purge']

# Status codes of acquire.lua.
_ACQUIRED, _ALREADY_HELD, _FULL, _NO_CLOCK = 1, 2, 0, -1


@dataclass(frozen=True)
class PoolKeys:
    """The Redis keys of one pool; they share a hash tag of that pool alone."""

    slots: str


@dataclass(frozen=True)
class Call:
    """One atomic script call: which script, on which keys, with which arguments."""

    script: ScriptName
    keys: tuple[str, ...]
    args: tuple[str | int, ...]
    pool: str  # the pool's key as the user gave it, for error messages


def validate_key(key: object) -> str:
    """Return `key` if it is a non-empty str, else raise naming it."""
    if not isinstance(key, str):
        raise TypeError(f'pool key must be a str, got {key!r} ({type(key).__name__})')
    if not key:
        raise ValueError('pool key must not be empty')
    return key


def validate_max_size(max_size: object) -> int:
    """Return `max_size` if it is an int >= 1, else raise naming it."""
    if isinstance(max_size, bool) or not isinstance(max_size, int):
        raise TypeError(f'max_size must be an int >= 1, got {max_size!r} ({type(max_size).__name__})')
    if max_size < 1:
        raise ValueError(f'max_size must be an int >= 1, got {max_size!r}')
    return max_size


def validate_slot_exp(slot_exp: object, name: str = 'slot_exp') -> SlotExp | UnsetType:
    """Return `slot_exp` if it is UNSET, None or a finite number of seconds > 0, else raise."""
    if slot_exp is None or isinstance(slot_exp, UnsetType):
        return slot_exp
    if isinstance(slot_exp, bool) or not isinstance(slot_exp, (int, float)):
        raise TypeError(f'{name} must be seconds (int or float > 0) or None, got {slot_exp!r}')
    if not (slot_exp > 0 and math.isfinite(slot_exp)):
        raise ValueError(f'{name} must be seconds > 0 (or None for never), got {slot_exp!r}')
    return slot_exp


def ttl_ms(slot_exp: SlotExp) -> int:
    """Slot lifetime as the scripts take it: whole ms (at least 1), 0 meaning never."""
    if slot_exp is None:
        return 0
    return max(1, round(slot_exp * 1000))


def pool_keys(name: str) -> PoolKeys:
    """The Redis keys of the pool called `name` (the prefix included).

    The whole name is the hash tag, so each pool lands on one cluster slot of its own.
    A name holding '}' would end the tag early and merge pools, so it is tagged by digest.
    """
    tag = hashlib.sha1(name.encode()).hexdigest() if '}' in name else name
    base = f'{{{tag}}}' if tag == name else f'{{{tag}}}{name}'
    return PoolKeys(slots=f'{base}:slots')


def new_slot_id() -> str:
    """A fresh random slot id: 64 bits, so two holders never share one."""
    return os.urandom(8).hex()


def acquire_call(prefix: str, key: str, slot: str, max_size: int, ttl: int) -> Call:
    """acquire.lua: take `slot` if the pool holds fewer than `max_size` (`ttl` ms, 0 = never)."""
    return Call('acquire', (pool_keys(prefix + key).slots,), (slot, max_size, ttl), key)


def release_call(prefix: str, key: str, slot: str) -> Call:
    """release.lua: give back `slot`."""
    return Call('release', (pool_keys(prefix + key).slots,), (slot,), key)


def size_call(prefix: str, key: str) -> Call:
    """size.lua: count the live slots."""
    return Call('size', (pool_keys(prefix + key).slots,), (), key)


def purge_call(prefix: str, key: str) -> Call:
    """purge.lua: drop the expired slots."""
    return Call('purge', (pool_keys(prefix + key).slots,), (), key)


def acquired(reply: object, call: Call) -> bool:
    """True if acquire.lua took (or already held) the slot, False if the pool is full."""
    status = _status(reply, call)
    if status in (_ACQUIRED, _ALREADY_HELD):
        return True
    if status == _FULL:
        return False
    raise _unexpected(reply, call)


def released(reply: object, call: Call) -> bool:
    """True if release.lua removed the slot, False if it was gone (expired or released)."""
    if reply in (0, 1):
        return bool(reply)
    raise _unexpected(reply, call)


def count(reply: object, call: Call) -> int:
    """The count that size.lua or purge.lua answered."""
    if isinstance(reply, int) and reply >= 0:
        return reply
    raise _unexpected(reply, call)


def _status(reply: object, call: Call) -> int:
    if isinstance(reply, (list, tuple)) and reply and isinstance(reply[0], int):
        return reply[0]
    raise _unexpected(reply, call)


def _unexpected(reply: object, call: Call) -> CachifyBackendError:
    if reply == _NO_CLOCK or (isinstance(reply, (list, tuple)) and reply and reply[0] == _NO_CLOCK):
        return CachifyBackendError(call.pool, 'the server clock (TIME) reads 0; slot expiry cannot work')
    return CachifyBackendError(call.pool, f'unexpected reply {reply!r} from {call.script}.lua')
