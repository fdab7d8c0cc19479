"""The shapes py-cachify 3.1.0 names: value encoders/decoders and the get/set/delete client protocols."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeAlias

__all__ = ['AsyncClient', 'Decoder', 'Encoder', 'SyncClient']

# `cached(..., enc_dec=(encoder, decoder))`: the encoder turns a result into something pickle
# can store, the decoder turns that back into the result.
Encoder: TypeAlias = Callable[[Any], Any]
Decoder: TypeAlias = Callable[[Any], Any]


class SyncClient(Protocol):
    """A sync client `init_cachify` accepts besides redis-py's: get, set (nx, ex) and delete.

    Such a client serves `cached`, `lock` and `once`; pools need Redis or the embedded default.
    """

    def get(self, name: str) -> Any | None:
        """The value stored at `name`, or None."""
        ...

    def delete(self, *names: str) -> Any:
        """Remove `names`."""
        ...

    def set(self, name: str, value: Any, *, ex: int | None = None, nx: bool = False) -> Any:
        """Store `value` for `ex` seconds (None: no expiry); with `nx`, only if `name` is absent,
        answering whether it stored it."""
        ...


class AsyncClient(Protocol):
    """`SyncClient`, each method returning an awaitable."""

    def get(self, name: str) -> Awaitable[Any | None]:
        """The value stored at `name`, or None."""
        ...

    def delete(self, *names: str) -> Awaitable[Any]:
        """Remove `names`."""
        ...

    def set(self, name: str, value: Any, *, ex: int | None = None, nx: bool = False) -> Awaitable[Any]:
        """Store `value`; see `SyncClient.set`."""
        ...
