"""py_cachify: distributed concurrency pools in Redis."""

from importlib.metadata import PackageNotFoundError, version

from .cachify import Cachify, init_cachify
from .decorators import AsyncOnFullDecorator, AsyncPooled, OnFullDecorator, PooledDecorator, SyncPooled, pooled

# The names py-cachify 3.1.0 gives these types, so existing annotations keep working.
from .decorators import AsyncPooled as AsyncPoolWrappedF
from .decorators import PooledDecorator as WrappedFunctionPool
from .decorators import SyncPooled as SyncPoolWrappedF
from .errors import CachifyBackendError, CachifyError, CachifyInitError, CachifyPoolFullError
from .lease import Lease
from .ops import UNSET
from .pool import pool

try:
    __version__ = version('py_cachify')
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = '0+unknown'

__all__ = [
    'UNSET',
    'AsyncOnFullDecorator',
    'AsyncPoolWrappedF',
    'AsyncPooled',
    'Cachify',
    'CachifyBackendError',
    'CachifyError',
    'CachifyInitError',
    'CachifyPoolFullError',
    'Lease',
    'OnFullDecorator',
    'PooledDecorator',
    'SyncPoolWrappedF',
    'SyncPooled',
    'WrappedFunctionPool',
    '__version__',
    'init_cachify',
    'pool',
    'pooled',
]
