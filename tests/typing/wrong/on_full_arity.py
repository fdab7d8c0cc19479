"""Mistakes the type checkers must catch: each line marked `# wrong` must be reported, no other."""

from __future__ import annotations

from py_cachify import init_cachify, pool, pooled

init_cachify()


def no_arguments() -> str:
    return 'busy'


def two_arguments(a: int, b: int) -> str:
    return 'busy'


async def abusy(n: int) -> str:
    return 'busy'


@pooled(key='k', max_size=1, on_full=no_arguments)  # wrong
def takes_one(n: int) -> int:
    return n


@pooled(key='k', max_size=1, on_full=two_arguments)  # wrong
async def atakes_one(n: int) -> int:
    return n


@pooled(key='k', max_size=1, on_full=abusy)  # wrong
def sync_with_async_on_full(n: int) -> int:
    return n


@pooled(key='k', max_size=1, raise_on_full=True)
def strict(n: int) -> int:
    return n


@pooled(key='k', max_size=1)
def plain(n: int) -> int:
    return n


not_none: int = strict(1)
maybe: int = plain(1)  # wrong
strict('one')  # wrong
pool('k', max_size=1).pooled(on_full=no_arguments)(plain.__wrapped__)  # wrong
