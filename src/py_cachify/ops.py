"""The pool operations as data: validated arguments in, script calls out, replies parsed.

Nothing here does I/O. The Redis backend sends a `Call` as one EVALSHA of the Lua script
of the same name; the embedded backend runs its Python twin of that script. Both give the
same raw reply, and the functions below turn it into a result or an exception, once.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from dataclasses import dataclass
from typing import Final, Literal

from .errors import CachifyBackendError
from .mailbox import new_slot_id

__all__ = [
    'FALLBACK_POLL',
    'HEARD_POLL',
    'HOLDERS_LIMIT',
    'MAX_REPLICA_TIMEOUT',
    'MAX_SECONDS',
    'PURGE_BATCH',
    'QUEUE_LEASE_MS',
    'RESERVE_MS',
    'UNSET',
    'WAIT_LEASE_MS',
    'Attempt',
    'Call',
    'Durability',
    'ScriptName',
    'SlotExp',
    'UnsetType',
    'acquire_call',
    'attempt',
    'count',
    'extend_call',
    'flag',
    'holders',
    'holders_call',
    'leave_call',
    'new_slot_id',
    'pool_keys',
    'purge_call',
    'release_call',
    'sharded',
    'sharded_pubsub',
    'size_call',
    'ttl_ms',
    'validate_durability',
    'validate_key',
    'validate_limit',
    'validate_max_size',
    'validate_seconds',
    'validate_slot_exp',
    'validate_timeout',
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
ScriptName = Literal[
    'acquire',
    'release',
    'size',
    'purge',
    'extend',
    'holders',
    'leave',
    # locks and the cache (cacheops.py builds their calls)
    'lock_break',
    'cache_fetch',
    'cache_store',
    'cache_abandon',
    'cache_delete',
]

# Status codes of acquire.lua.
_ACQUIRED, _ALREADY_HELD, _NOT_ACQUIRED, _NO_CLOCK = 1, 2, 0, -1

# A waiter that stops calling acquire loses its lease (and queue place) after this long; each
# try renews it, so every waiter tries again well before: only a dead one ever lapses.
# - Queued (fair=True): a dead waiter at the head of the queue holds up those behind it until
#   its lease lapses, so leases are short, and renewed by a poll every FALLBACK_POLL.
# - Out of the queue (fair=False): a release names one such waiter, holds the freed slot for
#   it for RESERVE_MS, and cuts its lease to that, so a dead one is named once and holds up the
#   others until another waiter tries after the hold.
#   While a subscription hears the channel, a message is not lost: these waiters poll every
#   HEARD_POLL only (most hand-overs then take one try), and their lease outlives it well.
#   While none hears it (not confirmed yet, refused, reconnecting) they poll every FALLBACK_POLL.
QUEUE_LEASE_MS = 5_000
FALLBACK_POLL = 1.0
WAIT_LEASE_MS = 15_000
HEARD_POLL = 5.0
# A freed slot that a release names a waiter out of the queue for is held for that waiter
# this long (lua/_lib.lua's RESERVE_MS, which explains the figure; the embedded store uses this).
RESERVE_MS = 200

# The scripts do bounded work per call: purge drops at most this many expired slots per
# call (pool.purge() repeats it), holders lists at most this many slots unless told more.
# On a 100,000-slot pool each such call takes about 0.2 ms of Redis's time, well under the
# 1 ms that tests/test_slowlog.py allows (benchmarks/slowlog.py has the figures).
PURGE_BATCH = 500
HOLDERS_LIMIT = 100

# Lua numbers are doubles that `..` prints with %.14g: an expiry (ms since the epoch, about
# 1.8e12 today) plus a lifetime must stay an exact integer below 1e14. 1e10 s (317 years)
# as whole ms leaves that margin for centuries.
MAX_SECONDS = 10**10
# The longest a durable acquire waits for its replicas (WAIT holds the connection meanwhile).
MAX_REPLICA_TIMEOUT = 60.0
# A sorted set holds fewer than 2**32 members, so any larger max_size or limit means the
# same as 2**32; sending that keeps every number a script computes from them exact.
_MAX_MEMBERS = 2**32


@dataclass(frozen=True)
class PoolKeys:
    """The Redis keys (and wake-up channel) of one pool; they share a hash tag of that pool alone."""

    slots: str
    queue: str
    leases: str
    channel: str


@dataclass(frozen=True)
class Call:
    """One atomic script call: which script, on which keys, with which arguments."""

    script: ScriptName
    keys: tuple[str, ...]
    args: tuple[str | int | bytes, ...]  # bytes: a cached value (cacheops.store_call)
    pool: str  # the pool's key as the user gave it, for error messages
    # Durability (acquire only): confirm with WAIT, in the same round trip, that the script's
    # writes reached this many replicas within `replica_timeout_ms`. The reply is then
    # [the script's reply, how many replicas acknowledged].
    replicas: int = 0
    replica_timeout_ms: int = 0


@dataclass(frozen=True)
class Durability:
    """How many replicas must have an acquire before its holder runs, and how long to wait for them."""

    replicas: int
    timeout: float  # seconds

    @property
    def timeout_ms(self) -> int:
        """WAIT's timeout: whole ms, at least 1 (WAIT takes 0 as "for ever")."""
        return max(1, round(self.timeout * 1000))


@dataclass(frozen=True)
class Attempt:
    """What acquire.lua answered: admitted or not, and when the nearest slot expires."""

    acquired: bool
    next_expiry: float | None  # seconds until the nearest slot expires; None if none will


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
    return validate_seconds(slot_exp, name)


def validate_seconds(value: object, name: str) -> float:
    """Return `value` if it is a finite number > 0, else raise naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{name} must be seconds (int or float > 0), got {value!r}')
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f'{name} must be seconds > 0, got {value!r}')
    if value > MAX_SECONDS:
        raise ValueError(
            f'{name} must be at most {MAX_SECONDS:,} seconds (about 317 years; use None for never), got {value!r}'
        )
    return value


def validate_limit(limit: object, name: str = 'limit') -> int:
    """Return `limit` if it is an int >= 1, else raise naming it."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f'{name} must be an int >= 1, got {limit!r} ({type(limit).__name__})')
    if limit < 1:
        raise ValueError(f'{name} must be an int >= 1, got {limit!r}')
    return limit


def validate_timeout(timeout: object) -> float | None:
    """Return `timeout` if it is None (no limit) or a finite number >= 0, else raise."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f'timeout must be seconds (int or float >= 0) or None, got {timeout!r}')
    if not (timeout >= 0 and math.isfinite(timeout)):
        raise ValueError(f'timeout must be seconds >= 0 (or None for no limit), got {timeout!r}')
    return timeout


def ttl_ms(slot_exp: SlotExp) -> int:
    """Slot lifetime as the scripts take it: whole ms (at least 1), 0 meaning never."""
    if slot_exp is None:
        return 0
    return max(1, round(slot_exp * 1000))


@functools.lru_cache(maxsize=4096)  # every call of a pool needs them: build them once
def pool_keys(name: str) -> PoolKeys:
    """The Redis keys of the pool called `name` (the prefix included).

    The whole name is the hash tag, so each pool lands on one cluster slot of its own.
    A name holding '}' would end the tag early and merge pools, so it is tagged by digest.
    """
    tag = hashlib.sha1(name.encode()).hexdigest() if '}' in name else name
    base = f'{{{tag}}}' if tag == name else f'{{{tag}}}{name}'
    return PoolKeys(slots=f'{base}:slots', queue=f'{base}:queue', leases=f'{base}:leases', channel=f'{base}:released')


def acquire_call(
    prefix: str,
    key: str,
    slot: str,
    max_size: int,
    ttl: int,
    queue: bool = False,
    durable: Durability | None = None,
    wait: bool = False,
) -> Call:
    """acquire.lua: take `slot` if the pool has room (`ttl` ms, 0 = never); `queue` to wait in line.

    `wait` (implied by `queue`) marks the caller as a waiter, so that releases wake it.

    With `durable`, the call also confirms that the acquire reached that many replicas.
    """
    k = pool_keys(prefix + key)
    # 1: queue for a place; 2: wait without one (a lease only, so a release knows someone waits).
    mode = 1 if queue else 2 if wait else 0
    args = (slot, min(max_size, _MAX_MEMBERS), ttl, mode, QUEUE_LEASE_MS if queue else WAIT_LEASE_MS)
    if durable is None:
        return Call('acquire', (k.slots, k.queue, k.leases), args, key)
    return Call('acquire', (k.slots, k.queue, k.leases), args, key, durable.replicas, durable.timeout_ms)


def validate_durability(replicas: object, replica_timeout: object) -> Durability | None:
    """The durability a pool asks for (None: replicas=0, no confirmation), or raise naming the bad value."""
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise TypeError(f'replicas must be an int >= 0, got {replicas!r} ({type(replicas).__name__})')
    if replicas < 0:
        raise ValueError(f'replicas must be an int >= 0, got {replicas!r}')
    timeout = validate_seconds(replica_timeout, 'replica_timeout')
    if timeout > MAX_REPLICA_TIMEOUT:
        # WAIT holds the connection (and the acquire) that long: more is a mistake, not a wait.
        raise ValueError(f'replica_timeout must be at most {MAX_REPLICA_TIMEOUT} seconds, got {replica_timeout!r}')
    return Durability(replicas, timeout) if replicas else None


def release_call(prefix: str, key: str, slot: str, max_size: int) -> Call:
    """release.lua: give back `slot` and wake the waiter it is owed to."""
    k = pool_keys(prefix + key)
    return Call('release', (k.slots, k.queue, k.leases), (slot, min(max_size, _MAX_MEMBERS), k.channel), key)


def leave_call(prefix: str, key: str, slot: str) -> Call:
    """leave.lua: take a waiter that gives up out of the queue and the leases; pass on a wake-up it may have had."""
    k = pool_keys(prefix + key)
    return Call('leave', (k.queue, k.leases), (slot, k.channel), key)


def extend_call(prefix: str, key: str, slot: str, ttl: int) -> Call:
    """extend.lua: push `slot`'s expiry to `ttl` ms from now (0 = never), if it is still held."""
    return Call('extend', (pool_keys(prefix + key).slots,), (slot, ttl), key)


def size_call(prefix: str, key: str) -> Call:
    """size.lua: count the live slots."""
    return Call('size', (pool_keys(prefix + key).slots,), (), key)


def purge_call(prefix: str, key: str, limit: int = PURGE_BATCH) -> Call:
    """purge.lua: drop at most `limit` expired slots; it answers how many it dropped.

    Fewer than `limit` dropped means none is left: a drain repeats it until then.
    """
    return Call('purge', (pool_keys(prefix + key).slots,), (min(validate_limit(limit), _MAX_MEMBERS),), key)


def holders_call(prefix: str, key: str, limit: int = HOLDERS_LIMIT) -> Call:
    """holders.lua: the `limit` live slots that expire soonest, and the ms each has left."""
    return Call('holders', (pool_keys(prefix + key).slots,), (min(validate_limit(limit), _MAX_MEMBERS),), key)


# The scripts that announce on a wake-up channel; each takes an optional last argument, '1'
# to announce with SPUBLISH (see publish() in lua/_lib.lua).
_PUBLISHING: frozenset[ScriptName] = frozenset({'release', 'leave', 'lock_break', 'cache_store', 'cache_abandon'})


def sharded(call: Call) -> Call:
    """`call` announcing with sharded pub/sub (SPUBLISH), for a Redis >= 7 Cluster.

    Calls that announce nothing are returned as they are.
    """
    if call.script not in _PUBLISHING:
        return call
    return dataclasses.replace(call, args=(*call.args, 1))


def sharded_pubsub(server_info: object) -> bool:
    """Whether a cluster whose node answered INFO server so takes SPUBLISH (Redis and Valkey >= 7)."""
    version = server_info.get('redis_version') if isinstance(server_info, dict) else None
    try:
        return int(str(version).split('.')[0]) >= 7
    except ValueError:
        return False


def attempt(reply: object, call: Call) -> Attempt:
    """Read acquire.lua's reply.

    For a durable call, raise `CachifyBackendError` (naming the shortfall) when the slot was
    taken but fewer replicas than asked acknowledged it: the caller must give it back.
    """
    acked = None
    if call.replicas:
        if not (isinstance(reply, (list, tuple)) and len(reply) == 2 and isinstance(reply[1], int)):
            raise _unexpected(reply, call)
        reply, acked = reply
    if isinstance(reply, (list, tuple)) and len(reply) == 3 and all(isinstance(x, int) for x in reply):
        status, _, wait_ms = reply
        if status in (_ACQUIRED, _ALREADY_HELD):
            if acked is not None and acked < call.replicas:
                raise CachifyBackendError(
                    call.pool,
                    f'the acquire reached {acked} of the {call.replicas} replica(s) asked for within '
                    f'{call.replica_timeout_ms} ms (replicas={call.replicas}); the slot is given back',
                )
            return Attempt(True, None)
        if status == _NOT_ACQUIRED:
            return Attempt(False, max(wait_ms, 0) / 1000 if wait_ms >= 0 else None)
    raise _unexpected(reply, call)


def flag(reply: object, call: Call) -> bool:
    """Read a 1/0 reply (release.lua, extend.lua, leave.lua)."""
    if reply in (0, 1):
        return bool(reply)
    raise _unexpected(reply, call)


def count(reply: object, call: Call) -> int:
    """The count that size.lua or purge.lua answered."""
    if isinstance(reply, int) and reply >= 0:
        return reply
    raise _unexpected(reply, call)


def holders(reply: object, call: Call) -> dict[str, float | None]:
    """holders.lua's reply as {slot id: seconds left (None = never expires)}, soonest first."""
    if not isinstance(reply, (list, tuple)) or len(reply) % 2:
        raise _unexpected(reply, call)
    pairs = zip(reply[::2], reply[1::2], strict=False)
    return {(s.decode() if isinstance(s, bytes) else str(s)): (None if ms == -1 else ms / 1000) for s, ms in pairs}


def _unexpected(reply: object, call: Call) -> CachifyBackendError:
    if reply == _NO_CLOCK or (isinstance(reply, (list, tuple)) and reply and reply[0] == _NO_CLOCK):
        return CachifyBackendError(call.pool, 'the server clock (TIME) reads 0; slot expiry cannot work')
    return CachifyBackendError(call.pool, f'unexpected reply {reply!r} from {call.script}.lua')
