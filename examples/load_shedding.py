"""Shed load before trying: compare size() with the pool's max_size.

Prints:
request 1: served (1/2 busy)
request 2: served (2/2 busy)
request 3: shed, downstream saturated (2/2 busy)
"""

import asyncio

from py_cachify import init_cachify, pool

init_cachify()

downstream = pool(key='downstream-api', max_size=2)


async def handle(request_id: int, release: asyncio.Event) -> None:
    busy = await downstream.asize()
    if busy >= downstream._max_size:  # `max_size` reads the same
        print(f'request {request_id}: shed, downstream saturated ({busy}/{downstream.max_size} busy)')
        return
    async with downstream:
        print(f'request {request_id}: served ({await downstream.asize()}/{downstream.max_size} busy)')
        await release.wait()


async def main() -> None:
    release = asyncio.Event()
    served = [asyncio.create_task(handle(i, release)) for i in (1, 2)]
    await asyncio.sleep(0.01)  # let both take their slots
    await handle(3, release)
    release.set()
    await asyncio.gather(*served)


asyncio.run(main())
