"""A lock taken twice: nowait refuses, a waiting lock is woken by the release, and once skips a busy call.

Prints:
second taker: nightly-report is already locked!
the waiter got the lock once the holder released it
busy
"""

import threading

from py_cachify import CachifyLockError, init_cachify, lock, once

init_cachify()  # no client: the embedded in-process default

with lock('nightly-report', exp=60):
    try:
        with lock('nightly-report'):  # nowait=True (the default): refuse at once
            pass
    except CachifyLockError as error:
        print(f'second taker: {error}')

holder = lock('nightly-report').acquire()
got_it = threading.Event()


def waiter() -> None:
    with lock('nightly-report', nowait=False, timeout=10):  # woken by the release, not by polling
        got_it.set()


thread = threading.Thread(target=waiter)
thread.start()
holder.release()
thread.join()
if got_it.is_set():
    print('the waiter got the lock once the holder released it')


@once(key='import-{source}', return_on_locked='busy')
def import_feed(source: str) -> str:
    return import_feed(source)  # a second call while the first runs


print(import_feed('prices'))
