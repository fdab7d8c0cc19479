"""py_cachify: distributed concurrency pools, locks and caching in Redis."""

from importlib.metadata import PackageNotFoundError, version

from .cached import AsyncResetWrappedF, SyncResetWrappedF, WrappedFunctionReset, cached
from .cachify import Cachify, init_cachify
from .codecs import AsyncClient, Decoder, Encoder, SyncClient
from .decorators import AsyncOnFullDecorator, AsyncPooled, OnFullDecorator, PooledDecorator, SyncPooled, pooled

# The names py-cachify 3.1.0 gives these types, so existing annotations keep working.
from .decorators import AsyncPooled as AsyncPoolWrappedF
from .decorators import PooledDecorator as WrappedFunctionPool
from .decorators import SyncPooled as SyncPoolWrappedF
from .errors import CachifyBackendError, CachifyError, CachifyInitError, CachifyLockError, CachifyPoolFullError
from .lease import Lease
from .lock import AsyncLockWrappedF, SyncLockWrappedF, WrappedFunctionLock, lock, once
from .ops import UNSET
from .pool import pool

try:
    __version__ = version('py_cachify')
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = '0+unknown'

__all__ = [
    'UNSET',
    'AsyncClient',
    'AsyncLockWrappedF',
    'AsyncOnFullDecorator',
    'AsyncPoolWrappedF',
    'AsyncPooled',
    'AsyncResetWrappedF',
    'Cachify',
    'CachifyBackendError',
    'CachifyError',
    'CachifyInitError',
    'CachifyLockError',
    'CachifyPoolFullError',
    'Decoder',
    'Encoder',
    'Lease',
    'OnFullDecorator',
    'PooledDecorator',
    'SyncClient',
    'SyncLockWrappedF',
    'SyncPoolWrappedF',
    'SyncPooled',
    'SyncResetWrappedF',
    'WrappedFunctionLock',
    'WrappedFunctionPool',
    'WrappedFunctionReset',
    '__version__',
    'cached',
    'init_cachify',
    'lock',
    'once',
    'pool',
    'pooled',
]
