"""Wait for a slot instead of failing: nowait=False, with a timeout and first-come order.

Prints:
worker 0 got a slot
worker 1 got a slot
worker 2 got a slot
worker 3 got a slot
impatient caller gave up: pool 'api-connections' is full (max_size=2)
"""

import asyncio

from py_cachify import CachifyPoolFullError, init_cachify, pool

init_cachify()

# Woken by releases (not by polling), in arrival order, giving up after 5 s.
connections = pool(key='api-connections', max_size=2, nowait=False, timeout=5, fair=True)


async def worker(n: int) -> None:
    async with connections:
        print(f'worker {n} got a slot')
        await asyncio.sleep(0.05)


async def main() -> None:
    workers = []
    for n in range(4):
        workers.append(asyncio.create_task(worker(n)))
        await asyncio.sleep(0.001)  # arrive in order
    await asyncio.gather(*workers)

    impatient = pool(key='api-connections', max_size=2, nowait=False, timeout=0.05)
    async with connections, connections:
        try:
            async with impatient:
                pass
        except CachifyPoolFullError as error:
            print(f'impatient caller gave up: {error}')


asyncio.run(main())
