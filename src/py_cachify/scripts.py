"""The Lua sources, read once from the `lua/` folder that ships inside the package."""

from __future__ import annotations

import functools
from importlib.resources import files
from pathlib import Path

from .ops import ScriptName

__all__ = ['LIBRARY', 'source']

# Shared by every script (clock, batch size, key-TTL rule), put in front of each at load.
LIBRARY = '_lib'


@functools.cache
def source(name: ScriptName) -> str:
    """The text to load for the script `name`: `lua/_lib.lua`, then `lua/<name>.lua`."""
    return _read(LIBRARY) + '\n' + _read(name)


def _read(name: str) -> str:
    packaged = files('py_cachify') / 'lua' / f'{name}.lua'
    if packaged.is_file():
        return packaged.read_text(encoding='utf-8')
    # An editable install maps src/ only; the scripts then sit at the repository's top.
    return (Path(__file__).resolve().parents[2] / 'lua' / f'{name}.lua').read_text(encoding='utf-8')
