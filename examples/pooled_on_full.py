"""@pooled with a per-user key, and on_full to answer when a user has too much in flight.

Prints:
user 42: processing (in flight: 1)
user 42: busy, try later
user 7: processing (in flight: 1)
done: 2 processed, 1 turned away
"""

import asyncio

from py_cachify import init_cachify, pooled

init_cachify()

turned_away: list[int] = []


async def tell_busy(user_id: int) -> str:
    turned_away.append(user_id)
    print(f'user {user_id}: busy, try later')
    return 'busy'


@pooled(key='user-{user_id}', max_size=1, on_full=tell_busy)
async def process(user_id: int) -> str:
    print(f'user {user_id}: processing (in flight: {await process.size(user_id)})')
    await asyncio.sleep(0.05)
    return 'ok'


async def main() -> None:
    first = asyncio.create_task(process(42))
    await asyncio.sleep(0.01)
    second = await process(42)  # user 42 already has one in flight: on_full answers
    third = await process(7)
    results = [await first, second, third]
    print(f'done: {results.count("ok")} processed, {len(turned_away)} turned away')


asyncio.run(main())
