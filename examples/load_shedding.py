"""Shed load atomically: `shed_at=0.8` admits only while fewer than 80% of the slots are held.

The check is made inside the acquire itself, so 15 requests arriving together cannot all pass
a `size()` check before any of them takes a slot: exactly 8 of a pool of 10 get in, the other
7 are turned away at once with `CachifyPoolFullError`, and 2 slots stay free for other callers.

Prints:
admitted 8 of 15, shed 7, 8/10 busy
"""

import asyncio
import os

import redis.asyncio

from py_cachify import CachifyPoolFullError, init_cachify, pool

url = os.environ.get('EXAMPLE_REDIS_URL')  # the tests set it to run this against a real Redis
cachify = init_cachify(async_client=redis.asyncio.Redis.from_url(url) if url else None)

downstream = pool(key='downstream-api', max_size=10, shed_at=0.8)


async def handle(answered: list[bool], all_answered: asyncio.Event, release: asyncio.Event) -> None:
    try:
        async with downstream:
            answered.append(True)
            if len(answered) == 15:
                all_answered.set()
            await release.wait()  # the request's work
    except CachifyPoolFullError:
        answered.append(False)  # shed: answer "try later" without touching the downstream
        if len(answered) == 15:
            all_answered.set()


async def main() -> None:
    answered: list[bool] = []
    all_answered, release = asyncio.Event(), asyncio.Event()
    requests = [asyncio.create_task(handle(answered, all_answered, release)) for _ in range(15)]
    await all_answered.wait()  # each was admitted or shed
    busy = await downstream.asize()
    release.set()
    await asyncio.gather(*requests)
    admitted = answered.count(True)
    print(f'admitted {admitted} of 15, shed {15 - admitted}, {busy}/{downstream.max_size} busy')
    await cachify.aclose()


asyncio.run(main())
