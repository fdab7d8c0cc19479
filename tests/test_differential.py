"""The embedded store against the Lua scripts: random operation sequences, every reply and message compared.

The embedded store (backends/memory.py) is a Python twin of lua/*.lua. Here both run the same
seeded random sequences of acquire (queued or not) / release / extend / size / holders /
purge / leave calls over a few pools and slot ids, and every reply, every published wake-up
and (where the clock is ours) the whole stored state must agree:

- fakeredis runs the real scripts with Lua, its clock (TIME and key expiry) set by the test,
  so sequences hit exact boundaries: a slot expiring at this very ms, a lease running out.
  It runs on Lua 5.1, as Redis embeds, and again (fewer sequences) on Lua 5.4.
- a real redis-server runs them on its own clock. The test reads Redis TIME before each call
  and runs the embedded store at that time; the call lands a fraction of a ms later, so no
  expiry may fall in between: the driver waits out any expiry closer than MARGIN_MS. Times in
  replies (ms left) may then differ by the measured gap and no more.
"""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis

from py_cachify.backends.memory import MemoryBackend
from py_cachify.ops import (
    RESERVE_MS,
    Call,
    acquire_call,
    extend_call,
    holders_call,
    leave_call,
    pool_keys,
    purge_call,
    release_call,
    size_call,
)
from py_cachify.scripts import source

PREFIX = 'diff-'
POOL_SCRIPTS = ('acquire', 'release', 'extend', 'size', 'holders', 'purge', 'leave')
SENTINEL = '{diff-sentinel}'  # published after each call: every message before it has arrived
SLOT_IDS = 'abcd'
# fakeredis picks its Lua when first imported: 5.1, as Redis embeds, unless told otherwise.
LUA = os.environ.get('FAKEREDIS_LUA_VERSION', '5.1')
FAKE_SEQUENCES = 200 if LUA == '5.1' else 40
REAL_SEQUENCES = 40
MARGIN_MS = 15


@dataclasses.dataclass(frozen=True)
class Pool:
    key: str
    max_size: int


@dataclasses.dataclass(frozen=True)
class Timing:
    """The numbers a sequence draws from, in ms."""

    lifetimes: tuple[int, ...]  # 0 = never expires
    ticks: tuple[int, ...]  # clock steps between calls
    lease: int  # queue lease


# The controlled clock can jump minutes; the real one must be slept through.
FAKE_TIMING = Timing(
    lifetimes=(0, 1, 50, 300, 1_000, 5_000), ticks=(0, 0, 1, 49, 50, 200, 300, 1_000, 6_000), lease=5_000
)
REAL_TIMING = Timing(lifetimes=(0, 40, 100, 250), ticks=(0, 0, 0, 10, 30, 80), lease=150)
POOLS = (Pool('one', 1), Pool('two', 2), Pool('three', 3), Pool('crowd', 200))


@dataclasses.dataclass(frozen=True)
class Op:
    """One step of a sequence: a call on a pool, a crowd of acquires, or a clock tick."""

    kind: str
    pool: Pool
    slot: str = ''
    number: int = 0  # ms of lifetime or tick, a limit, or a crowd's size
    queue: bool = False
    wait: bool = False  # waits unqueued: holds a lease, so releases publish (implied by queue)

    def calls(self, lease: int) -> Iterator[Call]:
        key, max_size = self.pool.key, self.pool.max_size
        if self.kind == 'acquire':
            call = acquire_call(PREFIX, key, self.slot, max_size, self.number, self.queue, wait=self.wait)
            yield dataclasses.replace(call, args=(*call.args[:-1], lease))
        elif self.kind == 'crowd':  # a fleet that arrives at once: more than a batch (100)
            for i in range(self.number):
                call = acquire_call(PREFIX, key, f'crowd-{i:03}', max_size, 40, self.queue, wait=self.wait)
                yield dataclasses.replace(call, args=(*call.args[:-1], lease))
        elif self.kind == 'release':
            yield release_call(PREFIX, key, self.slot, max_size)
        elif self.kind == 'extend':
            yield extend_call(PREFIX, key, self.slot, self.number)
        elif self.kind == 'size':
            yield size_call(PREFIX, key)
        elif self.kind == 'holders':
            yield holders_call(PREFIX, key, limit=self.number)
        elif self.kind == 'purge':
            yield purge_call(PREFIX, key, limit=self.number)
        elif self.kind == 'leave':
            yield leave_call(PREFIX, key, self.slot)


def random_sequence(rng: random.Random, timing: Timing, length: int) -> list[Op]:
    ops: list[Op] = []
    # Half the sequences crowd one small pool with waiters out of the queue, so releases name
    # them and leaves pass those names on; the others mix everything over every pool.
    crowded = rng.random() < 0.5
    pools = (rng.choice(POOLS[:2]),) if crowded else POOLS[:3]
    queue_p, wait_p = (0.1, 0.9) if crowded else (0.4, 0.5)
    for _ in range(length):
        pool = rng.choice(pools) if rng.random() < 0.9 else POOLS[3]
        slot = rng.choice(SLOT_IDS)
        kind = rng.choices(
            ['acquire', 'release', 'extend', 'size', 'holders', 'purge', 'leave', 'tick', 'crowd'],
            weights=[30, 15, 8, 4, 4, 4, 10 if crowded else 5, 10 if crowded else 25, 1],
        )[0]
        if kind in ('acquire', 'extend'):
            lifetime = rng.choice(timing.lifetimes)
            ops.append(Op(kind, pool, slot, lifetime, rng.random() < queue_p, rng.random() < wait_p))
        elif kind == 'tick':
            ops.append(Op(kind, pool, number=rng.choice(timing.ticks)))
        elif kind in ('holders', 'purge'):
            ops.append(Op(kind, pool, number=rng.choice([1, 2, 3, 1_000])))
        elif kind == 'crowd':
            ops.append(
                Op(
                    kind,
                    rng.choice(POOLS),
                    number=rng.randrange(101, 112),
                    queue=rng.random() < 0.4,
                    wait=rng.random() < 0.5,
                )
            )
        else:
            ops.append(Op(kind, pool, slot))
    return ops


def plain(reply: object) -> object:
    """A reply as comparable data: str for bytes, lists for sequences, errors by type."""
    if isinstance(reply, bytes):
        return reply.decode()
    if isinstance(reply, (list, tuple)):
        return [plain(x) for x in reply]
    return reply


def run_safely(run: Any, call: Call) -> object:
    try:
        return plain(run(call))
    except Exception as exc:  # a script error must show up as a difference, not end the test
        return ('error', type(exc).__name__, str(exc)[:200])


class Embedded:
    """The embedded store on a clock the test sets (µs), recording what it publishes."""

    def __init__(self) -> None:
        self.us = 0
        self.published: list[tuple[str, str]] = []
        self.backend = MemoryBackend(lambda: self.us / 1_000_000)
        self.backend.wakeups = self  # type: ignore[assignment]

    @property
    def ms(self) -> int:
        return self.us // 1000

    def deliver(self, channel: str, payload: str) -> None:
        self.published.append((channel, payload))

    def run(self, call: Call) -> object:
        return run_safely(self.backend.run, call)

    def messages(self) -> list[tuple[str, str]]:
        published, self.published = self.published, []
        return published

    def state(self, keys: list[str]) -> dict[str, tuple[list[list[object]], float | None]]:
        """`keys` as Redis would show them now: members with scores, and expiry (ms)."""
        backend, now = self.backend, self.ms
        alive = {
            k: z
            for k in keys
            if (z := backend._zsets.get(k)) and not (k in backend._expiry and now > backend._expiry[k])
        }
        return {
            k: ([[m, s] for s, m in sorted((s, m) for m, s in z.items())], backend._expiry.get(k))
            for k, z in alive.items()
        }

    def held_for(self, pool: Pool) -> dict[str, float]:
        """The waiters out of the queue that a freed slot is held for (reserve_waiter()), and when that ends (ms).

        They are the queued waiters whose lease ends RESERVE_MS after they joined the queue;
        a fair waiter's ends a full lease (5 s here) after its last try.
        """
        keys = pool_keys(PREFIX + pool.key)
        queue, leases = self.backend._zsets.get(keys.queue, {}), self.backend._zsets.get(keys.leases, {})
        return {w: leases[w] for w, us in queue.items() if leases.get(w) == us // 1000 + RESERVE_MS}

    def critical(self) -> list[float]:
        """The instants (ms) at which some reply would change: expiries of slots, leases, keys."""
        backend = self.backend
        scores = [s for k, z in backend._zsets.items() if not k.endswith(':queue') for s in z.values()]
        return scores + [e + 1 for e in backend._expiry.values()]


class Scripted:
    """The real Lua scripts on a Redis (or fakeredis) client, and a subscriber to every pool's channel."""

    def __init__(self, client: Any, blocking_reads: bool) -> None:
        self.client = client
        self.scripts = {name: client.register_script(source(name)) for name in POOL_SCRIPTS}
        for script in self.scripts.values():
            client.script_load(script.script)  # the first call must not be slowed by a NOSCRIPT reload
        self.pubsub = client.pubsub()
        self.pubsub.psubscribe(f'{{{PREFIX}*')
        # fakeredis delivers at PUBLISH, and a blocking read there would wait on our frozen clock.
        self.timeout = 1.0 if blocking_reads else 0.0
        self._read(lambda message: message['type'] == 'psubscribe')

    def run(self, call: Call) -> object:
        return run_safely(lambda c: self.scripts[c.script](keys=c.keys, args=c.args), call)

    def messages(self) -> list[tuple[str, str]]:
        self.client.publish(SENTINEL, 'end')
        return self._read(lambda message: plain(message['channel']) == SENTINEL)

    def _read(self, until: Any) -> list[tuple[str, str]]:
        got: list[tuple[str, str]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=self.timeout)
            if message is None:
                continue
            if until(message):
                return got
            if message['type'] == 'pmessage':
                got.append((str(plain(message['channel'])), str(plain(message['data']))))
        raise AssertionError(f'the sentinel message never arrived; got {got}')

    def state(self, keys: list[str]) -> dict[str, tuple[list[list[object]], float | None]]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.zrange(key, 0, -1, withscores=True)
            pipe.pexpiretime(key)
        replies = pipe.execute()
        return {
            key: ([[plain(m), s] for m, s in members], None if expiry == -1 else expiry)
            for key, members, expiry in zip(keys, replies[::2], replies[1::2], strict=True)
            if members
        }

    def close(self) -> None:
        self.pubsub.close()


def keys_of(*pools: Pool) -> list[str]:
    return [k for p in pools for k in (lambda k: (k.slots, k.queue, k.leases))(pool_keys(PREFIX + p.key))]


def describe(seed: int, ops: list[Op], at: int) -> str:
    lines = [f'seed {seed}, op {at}:'] + [f'  {"->" if i == at else "  "} {op}' for i, op in enumerate(ops[: at + 1])]
    return '\n'.join(lines)


# -- fakeredis: the clock is ours -----------------------------------------------------------


class FrozenTime:
    """A stand-in for fakeredis's `time` module whose time() reads the test's clock."""

    def __init__(self, embedded: list[Embedded]) -> None:
        self.current = embedded

    def time(self) -> float:
        return self.current[0].us / 1_000_000

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def controlled_fakeredis(monkeypatch: pytest.MonkeyPatch) -> list[Embedded]:
    """Points fakeredis's clock (TIME and key expiry) at the current Embedded store's clock."""
    import fakeredis._helpers
    import fakeredis._socket._base
    import fakeredis.commands_mixins.server_mixin

    current: list[Embedded] = [Embedded()]
    frozen = FrozenTime(current)
    for module in (fakeredis._socket._base, fakeredis._helpers, fakeredis.commands_mixins.server_mixin):
        monkeypatch.setattr(module, 'time', frozen)
    return current


def test_the_embedded_store_matches_the_scripts_on_fakeredis_at_every_ms(
    controlled_fakeredis: list[Embedded],
) -> None:
    compared = 0
    named: Counter[str] = Counter()  # ops whose message named a waiter out of the queue
    reserved: Counter[str] = Counter()  # what befell slots held for a named waiter
    for seed in range(FAKE_SEQUENCES):
        rng = random.Random(seed)
        ops = random_sequence(rng, FAKE_TIMING, rng.randrange(5, 40))
        embedded = Embedded()
        # Whole ms: fakeredis expires keys by its µs clock, Redis by whole ms (mstime).
        embedded.us = (1_750_000_000_000 + rng.randrange(1_000)) * 1000
        controlled_fakeredis[0] = embedded
        scripted = Scripted(fakeredis.FakeRedis(server=fakeredis.FakeServer()), False)
        try:
            assert scripted.client.eval('return _VERSION', 0) == f'Lua {LUA}'.encode()
            for at, op in enumerate(ops):
                if op.kind == 'tick':
                    embedded.us += op.number * 1000
                    continue
                before = set(embedded.backend._zsets.get(pool_keys(PREFIX + op.pool.key).queue, {}))
                held = embedded.held_for(op.pool)
                for call in op.calls(FAKE_TIMING.lease):
                    expected, got = embedded.run(call), scripted.run(call)
                    if op.kind == 'acquire' and op.slot in held:
                        # The waiter a slot is held for takes it while the hold stands, unless
                        # no slot was free (a leave holds one without seeing the slots).
                        took = isinstance(got, list) and got[0] == 1
                        full = isinstance(got, list) and got[1] >= op.pool.max_size
                        reserved['taken' if took else 'missed'] += 1
                        assert took or full or held[op.slot] <= embedded.ms, describe(seed, ops, at)
                    elif op.kind == 'acquire' and any(until > embedded.ms for until in held.values()):
                        reserved['others tried'] += 1  # another caller while a hold stands
                    assert got == expected, f'{call}\nscripts: {got}\nembedded: {expected}\n{describe(seed, ops, at)}'
                    compared += 1
                got_messages, expected_messages = scripted.messages(), embedded.messages()
                assert got_messages == expected_messages, (
                    f'scripts published {got_messages}\nembedded {expected_messages}\n{describe(seed, ops, at)}'
                )
                named[op.kind] += any(payload and payload not in before for _, payload in got_messages)
                if op.kind == 'leave' and op.slot in held:
                    reserved['left'] += 1
                now_held = embedded.held_for(op.pool)
                reserved['lapsed'] += any(until <= embedded.ms and w not in now_held for w, until in held.items())
                keys = keys_of(op.pool)
                assert scripted.state(keys) == embedded.state(keys), describe(seed, ops, at)
        finally:
            scripted.close()
    assert compared > FAKE_SEQUENCES * 10
    # The sequences reach the naming of waiters out of the queue: by a release, and by a leave
    # that passes on a wake-up its waiter was named for.
    assert named['release'] >= FAKE_SEQUENCES // 10, named
    assert named['leave'] >= 1, named
    # ... and what follows a hold: the named waiter takes its slot; other callers try while
    # it stands; it lapses unused; the named waiter leaves instead.
    assert min(reserved[k] for k in ('taken', 'others tried', 'lapsed', 'left')) >= 1, reserved


@pytest.mark.skipif(LUA != '5.1', reason='this is the run on Lua 5.4')
def test_the_scripts_run_alike_on_lua_5_4() -> None:
    # Other engines may move to Lua 5.4: no global unpack, integers apart from floats. A fresh
    # interpreter runs the fakeredis comparison with fakeredis on Lua 5.4.
    test = f'{__file__}::test_the_embedded_store_matches_the_scripts_on_fakeredis_at_every_ms'
    env = {**os.environ, 'FAKEREDIS_LUA_VERSION': '5.4'}
    command = [sys.executable, '-m', 'pytest', test, '-q', '-p', 'no:cacheprovider']
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert '1 passed' in done.stdout


# -- a real redis-server: its own clock -----------------------------------------------------


def server_time(client: redis.Redis) -> tuple[int, int]:
    """Redis TIME as (ms, µs) since the epoch."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000, int(seconds) * 1_000_000 + int(micros)


def near(got: object, expected: object, call: Call, slack: int) -> bool:
    """Equal, except that ms-left figures (acquire's wait, holders' ms) may differ by `slack`.

    Holders whose expiries differ by less than `slack` may also come in another order: one
    side stamped them in one ms, which sorts them by name, and the other did not.
    """
    if got == expected or not (isinstance(got, list) and isinstance(expected, list)) or len(got) != len(expected):
        return got == expected
    if call.script == 'holders':
        return _near_holders(got, expected, slack)
    times = {2} if call.script == 'acquire' else set(range(1, len(got), 2)) if call.script == 'holders' else set()
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        if i in times and isinstance(a, int) and isinstance(b, int) and a >= 0 and b >= 0:
            if abs(a - b) > slack:
                return False
        elif a != b:
            return False
    return True


def _near_holders(got: list[Any], expected: list[Any], slack: int) -> bool:
    """Holders' replies alike up to `slack` ms, the server's in expiry order (-1, never, last).

    Where the list was cut at its limit, a holder just past the cut on one side may be the
    last one listed on the other, if their expiries are within `slack`.
    """
    mine, theirs = dict(zip(got[::2], got[1::2], strict=True)), dict(zip(expected[::2], expected[1::2], strict=True))
    key = [float('inf') if ms == -1 else ms for ms in got[1::2]]
    if key != sorted(key) or any(abs(mine[h] - theirs[h]) > slack for h in mine.keys() & theirs.keys()):
        return False
    last = max(key, default=0)
    return all(abs(last - {**theirs, **mine}[h]) <= slack for h in mine.keys() ^ theirs.keys())


def test_the_embedded_store_matches_the_scripts_on_a_real_redis_server(redis_client: redis.Redis) -> None:
    compared = cut_short = 0
    scripted = Scripted(redis_client, True)
    try:
        for seed in range(REAL_SEQUENCES):
            redis_client.delete(*keys_of(*POOLS))
            rng = random.Random(10_000 + seed)
            ops = random_sequence(rng, REAL_TIMING, rng.randrange(5, 30))
            embedded = Embedded()
            done = _run_on_the_server_clock(seed, ops, scripted, embedded)
            compared += done
            cut_short += done < 0
    finally:
        scripted.close()
        redis_client.delete(*keys_of(*POOLS))
    assert compared > REAL_SEQUENCES * 5
    # A loaded machine may stall a call across an expiry; that only cuts a sequence short.
    assert cut_short <= REAL_SEQUENCES // 2


def _run_on_the_server_clock(seed: int, ops: list[Op], scripted: Scripted, embedded: Embedded) -> int:
    """Run `ops` on both; the number of calls compared, or minus that if a stall cut it short.

    The embedded store stamps expiries at the time read before a call, Redis a little later:
    each stored expiry may be later in Redis by up to `jitter`, the longest call so far.
    """
    client, compared, jitter = scripted.client, 0, 1
    for at, op in enumerate(ops):
        if op.kind == 'tick':
            time.sleep(op.number / 1000)
            continue
        for call in op.calls(REAL_TIMING.lease):
            before, embedded.us = _wait_clear_of_expiries(client, embedded, jitter)
            if call.script in ('release', 'leave') and _lease_order(client, op.pool, before) != _lease_order(
                embedded, op.pool, before
            ):
                # Two waiters' leases fell in one ms on one side only (the stamps differ by up
                # to `jitter`), so ties between them break by name there: the waiter a release
                # names out of the queue (the earliest lease) may rightly differ.
                return -compared
            expected, got = embedded.run(call), scripted.run(call)
            after, _ = server_time(client)
            if any(before - 1 - jitter <= c <= after + 1 for c in embedded.critical()):
                return -compared  # stalled past MARGIN_MS: it may have landed on either side of an expiry
            jitter = max(jitter, after - before + 1)
            assert near(got, expected, call, jitter), (
                f'{call}\nscripts: {got}\nembedded: {expected}\n{describe(seed, ops, at)}'
            )
            compared += 1
        got_messages, expected_messages = scripted.messages(), embedded.messages()
        assert got_messages == expected_messages, (
            f'scripts published {got_messages}\nembedded {expected_messages}\n{describe(seed, ops, at)}'
        )
    return compared


def _lease_order(store: redis.Redis | Embedded, pool: Pool, now: int) -> list[str]:
    """The pool's live waiters in the order reserve_waiter() picks them: by lease end, then by name."""
    key = pool_keys(PREFIX + pool.key).leases
    if isinstance(store, Embedded):
        leases = [(m, s) for m, s in store.backend._zsets.get(key, {}).items()]
    else:
        leases = [(str(plain(m)), s) for m, s in store.zrange(key, 0, -1, withscores=True)]
    return [m for m, s in sorted(leases, key=lambda ms: (ms[1], ms[0])) if s > now]


def _wait_clear_of_expiries(client: redis.Redis, embedded: Embedded, jitter: int) -> tuple[int, int]:
    """Redis's time (ms, µs) once no expiry falls within MARGIN_MS of it."""
    while True:
        now, now_us = server_time(client)
        soon = [c for c in embedded.critical() if now - 1 - jitter <= c <= now + MARGIN_MS]
        if not soon:
            return now, now_us
        time.sleep((max(soon) - now + jitter + 2) / 1000)
