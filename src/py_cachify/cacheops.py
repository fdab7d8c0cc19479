"""The cache and the lock break as data: keys, script calls, replies and the fetch rules, no I/O.

`cached` runs `fetch_flow` (a generator of steps) from a sync and an async shell; the Redis
backend sends each `Call` as one EVALSHA, the embedded store runs its Python twin, and a
protocol client (get/set/delete) runs an emulation of it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Final

from .errors import CachifyBackendError
from .ops import Call, pool_keys
from .steps import LISTEN, Step, Wait

__all__ = [
    'CLAIMED',
    'HIT',
    'LISTEN',
    'Compute',
    'Hit',
    'Wait',
    'abandon_call',
    'cache_channel',
    'delete_call',
    'fetch_call',
    'fetch_flow',
    'fill_key',
    'lock_break_call',
    'lock_pool_name',
    'new_token',
    'store_call',
    'validate_ttl',
]

# The namespace of a lock's pool of one: the lock 'k' is held in the pool 'lock:k'.
LOCK_NAMESPACE: Final = 'lock:'
# Status codes of cache_fetch.lua.
HIT, CLAIMED, BUSY = 1, 0, 2
# A stampede waiter that heard nothing (a lost message) looks again at least this often.
_WAITER_POLL = 1.0


def lock_pool_name(key: str) -> str:
    """The pool of one that holds the lock `key`."""
    return LOCK_NAMESPACE + key


def lock_break_call(prefix: str, key: str) -> Call:
    """lock_break.lua: free the lock `key` whoever holds it, and wake a waiter."""
    keys = pool_keys(prefix + lock_pool_name(key))
    return Call('lock_break', (keys.slots,), (keys.channel,), lock_pool_name(key))


def new_token() -> str:
    """A fresh random claim token: 64 bits, so two callers never share one."""
    return os.urandom(8).hex()


def validate_ttl(ttl: object, name: str = 'ttl') -> int | None:
    """Return `ttl` if it is None (no expiry) or whole seconds >= 1, else raise naming it."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl):
        raise TypeError(f'{name} must be seconds (an int >= 1) or None for no expiry, got {ttl!r}')
    if ttl <= 0:
        raise ValueError(f'{name} must be seconds >= 1 (or None for no expiry), got {ttl!r}')
    return math.ceil(ttl)


def fill_key(value_key: str) -> str:
    """The key of the fill claim for `value_key`, on the same cluster slot.

    Redis Cluster hashes a key's `{tag}` if it has one, else the whole key. A key with a tag
    keeps it (the claim appends to it); a key without one becomes the claim's tag. A key
    holding a lone '}' can be neither: on a cluster its claim may land elsewhere.
    """
    opening = value_key.find('{')
    if opening >= 0 and value_key.find('}', opening + 1) > opening + 1:
        return value_key + ':fill'
    return f'{{{value_key}}}:fill' if '}' not in value_key else value_key + ':fill'


def cache_channel(value_key: str) -> str:
    """Where a stored (or abandoned) value of `value_key` is announced to its waiters."""
    return fill_key(value_key) + 'ed'


def fetch_call(value_key: str, token: str, claim_ms: int) -> Call:
    """cache_fetch.lua: the value, or the claim to compute it (`claim_ms` 0 = never claim)."""
    return Call('cache_fetch', (value_key, fill_key(value_key)), (token, claim_ms), value_key)


def store_call(value_key: str, token: str, value: bytes, ttl: int | None) -> Call:
    """cache_store.lua: store `value` for `ttl` seconds (None = no expiry), drop the claim, wake."""
    ttl_ms = 0 if ttl is None else ttl * 1000
    args = (token, value, ttl_ms, cache_channel(value_key))
    return Call('cache_store', (value_key, fill_key(value_key)), args, value_key)


def abandon_call(value_key: str, token: str) -> Call:
    """cache_abandon.lua: give up the claim (nothing is cached) and wake the waiters."""
    return Call('cache_abandon', (fill_key(value_key),), (token, cache_channel(value_key)), value_key)


def delete_call(value_key: str) -> Call:
    """cache_delete.lua: forget the cached value."""
    return Call('cache_delete', (value_key,), (), value_key)


# -- the fetch rules, as steps ------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """The value was there (still encoded)."""

    value: bytes


@dataclass(frozen=True)
class Compute:
    """Compute the value; `claimed` says whether this caller holds the fill claim."""

    claimed: bool


def fetch_flow(value_key: str, token: str, wait: float, poll: float) -> Generator[Step, object, Hit | Compute]:
    """The rules of a cached call up to computing: yields calls and waits, returns what to do.

    A miss claims the right to compute; a miss while another caller computes waits for its
    value (woken by its store), at most `wait` seconds, then computes without the claim.
    `wait` 0 never claims nor waits. `poll` bounds each wait, in case a message is lost.
    """
    claim_ms = max(1, round(wait * 1000)) if wait > 0 else 0
    call = fetch_call(value_key, token, claim_ms)
    deadline = time.monotonic() + wait
    listening = False
    while True:
        reply = yield call
        status, value, left_ms = _fetched(reply, call)
        if status == HIT:
            return Hit(value)
        if status == CLAIMED:
            return Compute(claimed=wait > 0)
        left = deadline - time.monotonic()
        if left <= 0:
            return Compute(claimed=False)
        if not listening:
            # Listen before looking again: a store between the two still wakes us.
            yield LISTEN
            listening = True
            continue
        claim_ends = None if left_ms < 0 else left_ms / 1000 + 0.001
        yield Wait(min(x for x in (left, claim_ends, poll, _WAITER_POLL) if x is not None))


def _fetched(reply: object, call: Call) -> tuple[int, bytes, int]:
    """Read cache_fetch.lua's reply."""
    if isinstance(reply, (list, tuple)) and len(reply) == 3:
        status, value, left = reply
        if status in (HIT, CLAIMED, BUSY) and isinstance(value, bytes) and isinstance(left, int):
            return status, value, left
    raise CachifyBackendError(call.pool, f'unexpected reply {reply!r} from {call.script}.lua')
