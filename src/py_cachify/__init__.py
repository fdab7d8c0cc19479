"""py_cachify: distributed concurrency pools in Redis."""

from .cachify import Cachify, init_cachify
from .decorators import AsyncPooled, PooledDecorator, SyncPooled, pooled
from .errors import CachifyBackendError, CachifyError, CachifyInitError, CachifyPoolFullError
from .ops import UNSET
from .pool import pool

# The names py-cachify 3.1.0 gives these types, so existing annotations keep working.
AsyncPoolWrappedF = AsyncPooled
SyncPoolWrappedF = SyncPooled
WrappedFunctionPool = PooledDecorator

__all__ = [
    'UNSET',
    'AsyncPoolWrappedF',
    'AsyncPooled',
    'Cachify',
    'CachifyBackendError',
    'CachifyError',
    'CachifyInitError',
    'CachifyPoolFullError',
    'PooledDecorator',
    'SyncPoolWrappedF',
    'SyncPooled',
    'WrappedFunctionPool',
    'init_cachify',
    'pool',
    'pooled',
]
