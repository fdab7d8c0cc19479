"""A user's script: `mypy --strict` and `pyright --strict` must pass it with no casts (tox -e types).

It is also run by the tests, on the embedded store, so what it asserts about types holds at run time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from typing_extensions import assert_type

from py_cachify import (
    AsyncLockWrappedF,
    AsyncPoolWrappedF,
    AsyncResetWrappedF,
    Cachify,
    CachifyLockError,
    CachifyPoolFullError,
    Decoder,
    Encoder,
    SyncLockWrappedF,
    SyncPoolWrappedF,
    SyncResetWrappedF,
    cached,
    init_cachify,
    lock,
    once,
    pool,
    pooled,
)

cachify: Cachify = init_cachify()


# -- plain functions, each way of handling a full pool ------------------------------------------


@pooled(key='plain', max_size=2)
def plain(n: int) -> int:
    return n * 2


@pooled(key='strict', max_size=2, raise_on_full=True)
def strict(n: int) -> int:
    return n * 2


def busy(n: int) -> str:
    return f'busy {n}'


@pooled(key='answered', max_size=2, on_full=busy)
def answered(n: int) -> int:
    return n * 2


def shrug(n: int) -> None:
    print(f'{n}: full, skipped')


@pooled(key='quiet', max_size=2, on_full=shrug)
def quiet(n: int) -> int:
    return n


async def abusy(user_id: int) -> str:
    return f'busy {user_id}'


@pooled(key='user-{user_id}', max_size=1, on_full=abusy)
async def per_user(user_id: int) -> int:
    return user_id


def busy_any(*args: Any, **kwargs: Any) -> str:
    return 'busy'


@pooled(key='user2-{user_id}', max_size=1, on_full=busy_any)
async def any_on_full(user_id: int) -> int:
    return user_id


@pooled(key='araise', max_size=1, raise_on_full=True, nowait=False, timeout=1.0)
async def araise(x: str) -> bytes:
    return x.encode()


@cachify.pooled(key='inst', max_size=1)
async def on_instance(x: str) -> str:
    return x


@cachify.pooled(key='inst-raise', max_size=1, raise_on_full=True)
def on_instance_raising(x: str) -> str:
    return x


jobs = pool('jobs', max_size=2, slot_exp=30)


@jobs.pooled()
def job() -> int:
    jobs.extend()
    return 1


@jobs.pooled(raise_on_full=True)
async def ajob() -> int:
    await jobs.aextend(5)
    return 1


@jobs.pooled(on_full=lambda: 'full')
def job_or_full() -> int:
    return 1


# -- methods ------------------------------------------------------------------------------------


class Service:
    def __init__(self, name: str) -> None:
        self.name = name

    @pooled(key='svc-{self.name}', max_size=1)
    def run(self, n: int) -> int:
        return n

    @pooled(key='svc-{self.name}', max_size=1, raise_on_full=True)
    async def arun(self, n: int) -> int:
        return n

    def refuse(self, n: int) -> int:
        return -n

    @pooled(key='svc-{self.name}', max_size=1, on_full=refuse)
    def run_or(self, n: int) -> int:
        return n


# -- py-cachify 3.1.0's names for the wrapped functions ------------------------------------------

legacy: SyncPoolWrappedF[[int], int] = plain
legacy_strict: SyncPoolWrappedF[[int], int] = strict
legacy_async: AsyncPoolWrappedF[[str], bytes] = araise


# -- locks, once and cached ----------------------------------------------------------------------


@lock('report-{day}')
def report(day: int) -> str:
    return f'report {day}'


@lock('areport', nowait=False, timeout=1.0, exp=5)
async def areport() -> int:
    return 1


@once('nightly-{n}', return_on_locked=0)
def nightly(n: int) -> int:
    return n


@cachify.once('anightly', raise_on_locked=True)
async def anightly() -> str:
    return 'ran'


@cached('square-{n}', ttl=60)
def square(n: int) -> int:
    return n * n


encode: Encoder = str
decode: Decoder = int


@cachify.cached('asquare-{n}', ttl=None, enc_dec=(encode, decode))
async def asquare(n: int) -> int:
    return n * n


class Catalog:
    def __init__(self, name: str) -> None:
        self.name = name

    @cached('catalog-{self.name}-{page}')
    def page(self, page: int) -> list[str]:
        return [self.name] * page

    @lock('catalog-{self.name}')
    async def rebuild(self) -> bool:
        return True


legacy_lock: SyncLockWrappedF[[int], str] = report
legacy_alock: AsyncLockWrappedF[[], int] = areport
legacy_cached: SyncResetWrappedF[[int], int] = square
legacy_acached: AsyncResetWrappedF[[int], int] = asquare


async def locks_and_cache() -> None:
    assert_type(report(1), str)
    assert_type(report.is_locked(1), bool)
    report.release(1)
    assert_type(await areport(), int)
    assert_type(await areport.is_locked(), bool)
    assert_type(nightly(3), int)
    assert_type(await anightly(), str)
    assert_type(square(3), int)
    square.reset(3)
    assert_type(await asquare(3), int)
    await asquare.reset(3)
    catalog = Catalog('books')
    assert_type(catalog.page(2), list[str])
    assert_type(await catalog.rebuild(), bool)
    with lock('direct-lock', exp=5) as held:
        assert_type(held.extend(10), bool)
        assert_type(held.is_locked(), bool)
    async with cachify.lock('instance-lock', nowait=False, timeout=1) as aheld:
        assert_type(await aheld.is_alocked(), bool)
    try:
        with lock('twice'), lock('twice'):
            pass
    except CachifyLockError as error:
        assert_type(error.key, str | None)


def sizes() -> int:
    # On a method, ask the class: `Service.run.size(service, n)` passes `self` on.
    return plain.size(1) + legacy.size(2) + Service.run.size(Service('a'), 1)


async def main() -> None:
    assert_type(plain(1), int | None)
    assert_type(strict(1), int)
    assert_type(answered(1), int | str)
    assert_type(quiet(1), int | None)
    assert_type(await per_user(1), int | str)
    assert_type(await araise('x'), bytes)
    assert_type(await on_instance('x'), str | None)
    assert_type(on_instance_raising('x'), str)
    assert_type(job(), int | None)
    assert_type(await ajob(), int)
    assert_type(job_or_full(), int | str)
    svc = Service('a')
    assert_type(svc.run(1), int | None)
    assert_type(await svc.arun(1), int)
    assert_type(svc.run_or(1), int)
    assert_type(await any_on_full(3), int | str)
    assert sizes() == 0
    await locks_and_cache()
    try:
        async with pool('direct', max_size=1):
            await jobs.asize()
    except CachifyPoolFullError as error:
        print(error.key, error.max_size)


if __name__ == '__main__':
    asyncio.run(main())
