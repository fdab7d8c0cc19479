"""A task that runs longer than slot_exp keeps its slot with auto_renew=True.

Prints:
slot_exp is 0.3 s; the task runs 1 s
still holding after 1 s: 1 slot(s) in use
after: 0 slot(s) in use
"""

import time

from py_cachify import init_cachify, pooled

init_cachify()


def lost(key: str) -> None:
    print(f'lost the slot of {key}!')  # renewal found the slot gone: stop or re-check work


# slot_exp bounds how long a crashed worker can keep a slot; renewal keeps a live one.
@pooled(key='nightly-report', max_size=1, slot_exp=0.3, auto_renew=True, on_lost=lost)
def build_report() -> None:
    print('slot_exp is 0.3 s; the task runs 1 s')
    time.sleep(1)
    print(f'still holding after 1 s: {build_report.size()} slot(s) in use')


build_report()
print(f'after: {build_report.size()} slot(s) in use')
