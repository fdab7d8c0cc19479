"""Watch an async pool fill and empty with asize().

Prints:
Pool size before: 0
Pool size during: 1
Pool size after: 0
"""

import asyncio

from py_cachify import init_cachify, pool

init_cachify()  # no client: the embedded in-process default


async def main() -> None:
    worker_pool = pool(key='worker-pool', max_size=5)
    print(f'Pool size before: {await worker_pool.asize()}')
    async with worker_pool:
        print(f'Pool size during: {await worker_pool.asize()}')
    print(f'Pool size after: {await worker_pool.asize()}')


asyncio.run(main())
