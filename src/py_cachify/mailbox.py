"""Mailboxes: a release that names a waiter reaches only the processes that may hold it.

A release names the one waiter it wakes (see lua/release.lua). Published on the pool's
channel, that name reached every subscribed process of the fleet, and each one's subscriber
woke, read it and dropped it but one: with 16 processes, 16 wake-ups and 16 deliveries on
Redis's side for one hand-over. So each process draws a mailbox token at start (and anew in
a forked child), every slot id it makes begins with it, and a message that names a waiter
goes to the channel `<pool channel>:<the id's first TOKEN_CHARS characters>` (publish() in
lua/_lib.lua, `addressed()` for the embedded store). A process subscribes its own mailbox
beside the pool's channel, which still carries '' ("any waiter may try") to everyone.

Two processes may draw one token (4,096 of them): they then hear each other's named
messages and drop them, as every process did before. A waiter of an older version, whose
id carries no token, is never named in a mailbox it hears, and finds its slots by its
poll instead.
"""

from __future__ import annotations

import base64
import os

__all__ = ['TOKEN_CHARS', 'addressed', 'mailbox', 'new_slot_id', 'pool_channel']

# The characters of a slot id that name its process's mailbox (lua/_lib.lua's MAILBOX).
TOKEN_CHARS = 2


def _draw() -> str:
    return base64.urlsafe_b64encode(os.urandom(3)).decode()[:TOKEN_CHARS]


_token = _draw()


def new_slot_id() -> str:
    """A fresh slot id: this process's token, then 60 random bits, 12 URL-safe characters in all.

    Twelve characters, not sixteen hex digits: a sorted set past 128 members keeps each id in
    an allocation of its own, and 12 fit the 16-byte size class where 16 took 32 (about 15 B
    less per live slot; benchmarks/cost.py measures it). 60 random bits keep two live ids of
    one process apart: a million live slots meet one twin with odds of about 1 in 2 million.
    """
    return _token + base64.urlsafe_b64encode(os.urandom(9)).decode()[TOKEN_CHARS:]


def addressed(channel: str, payload: str) -> str:
    """The channel a message with `payload` goes to: the named waiter's mailbox, or `channel` for ''."""
    return f'{channel}:{payload[:TOKEN_CHARS]}' if payload else channel


def mailbox(channel: str) -> str:
    """This process's mailbox on wake-up channel `channel`."""
    return f'{channel}:{_token}'


def pool_channel(name: str) -> str:
    """The wake-up channel a subscribed `name` (a channel, or this process's mailbox on it) serves."""
    suffix = ':' + _token
    # A channel's own name ends in a word longer than a token (':released', ':filled'), so
    # only a mailbox ends in ':' and a token.
    return name[: -len(suffix)] if name.endswith(suffix) else name


def _draw_again_in_child() -> None:
    # A forked child waits in a process of its own: Celery's prefork children would otherwise
    # all share their parent's mailbox, and each hear the others' named messages. Never the
    # parent's token again: a parent that waits beside its children is the common case.
    global _token
    parents, _token = _token, _draw()
    while _token == parents:
        _token = _draw()


os.register_at_fork(after_in_child=_draw_again_in_child)
