"""Mistakes the type checkers must catch on lock, once and cached: each line marked `# wrong`, no other."""

from __future__ import annotations

from py_cachify import cached, init_cachify, lock, once

init_cachify()


@lock('report-{day}')
def report(day: int) -> str:
    return str(day)


@once('import-{source}')
async def import_feed(source: str) -> int:
    return len(source)


@cached('square-{n}')
def square(n: int) -> int:
    return n * n


async def main() -> None:
    report.release('monday')  # wrong
    locked: str = report.is_locked(1)  # wrong
    await import_feed(3)  # wrong
    square.reset()  # wrong
    text: str = square(2)  # wrong
    cached('k', ttl='10')  # wrong
    lock('k', nowait='no')  # wrong
    print(locked, text)
