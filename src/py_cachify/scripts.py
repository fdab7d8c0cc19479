"""The Lua sources, read once from the `lua/` folder that ships inside the package."""

from __future__ import annotations

import functools
from importlib.resources import files
from pathlib import Path

from .ops import ScriptName

__all__ = ['source']


@functools.cache
def source(name: ScriptName) -> str:
    """The text of `lua/<name>.lua`."""
    packaged = files('py_cachify') / 'lua' / f'{name}.lua'
    if packaged.is_file():
        return packaged.read_text(encoding='utf-8')
    # An editable install maps src/ only; the scripts then sit at the repository's top.
    return (Path(__file__).resolve().parents[2] / 'lua' / f'{name}.lua').read_text(encoding='utf-8')
