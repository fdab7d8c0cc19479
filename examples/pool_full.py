"""What entering a full pool does: CachifyPoolFullError, and the holders keep their slots.

Prints:
holding 1 of 1
second caller: pool 'exports' is full (max_size=1)
after: 0
"""

from py_cachify import CachifyPoolFullError, init_cachify, pool

init_cachify()

exports = pool(key='exports', max_size=1)
with exports:
    print(f'holding {exports.size()} of {exports.max_size}')
    try:
        with exports:
            print('never printed')
    except CachifyPoolFullError as error:
        print(f'second caller: {error}')
print(f'after: {exports.size()}')
