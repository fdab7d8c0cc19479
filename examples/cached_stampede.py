"""Twenty callers miss the same cached value at once: one computes it, the others wait for its value.

Prints:
computed 1 time(s) for 20 callers: {'price': 42}
all hits now: computed 1 time(s)
after reset: computed 2 time(s)
"""

import asyncio

from py_cachify import cached, init_cachify

init_cachify()  # no client: the embedded in-process default; with Redis it works across processes
computed = 0


@cached(key='price-{item}', ttl=60)
async def price(item: str) -> dict[str, int]:
    global computed
    computed += 1
    await asyncio.sleep(0.2)  # a slow query
    return {'price': 42}


async def main() -> None:
    answers = await asyncio.gather(*(price('apple') for _ in range(20)))
    print(f'computed {computed} time(s) for {len(answers)} callers: {answers[0]}')
    await asyncio.gather(*(price('apple') for _ in range(20)))
    print(f'all hits now: computed {computed} time(s)')
    await price.reset('apple')
    await price('apple')
    print(f'after reset: computed {computed} time(s)')


asyncio.run(main())
