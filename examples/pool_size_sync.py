"""Watch a sync pool fill and empty with size().

Prints:
Pool size before: 0
Pool size during: 1
Pool size after: 0
"""

from py_cachify import init_cachify, pool

init_cachify()  # no client: the embedded in-process default

report_pool = pool(key='report-pool', max_size=2)
print(f'Pool size before: {report_pool.size()}')
with report_pool:
    print(f'Pool size during: {report_pool.size()}')
print(f'Pool size after: {report_pool.size()}')
