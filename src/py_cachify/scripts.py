"""The Lua sources, read once from the `lua/` folder that ships inside the package."""

from __future__ import annotations

import functools
import re
from importlib.resources import files
from pathlib import Path

from .ops import ScriptName

__all__ = ['LIBRARY', 'library_for', 'source']

# Shared by every script (clock, batch size, key-TTL rule), put in front of each at load.
LIBRARY = '_lib'


@functools.cache
def source(name: ScriptName) -> str:
    """The text to load for the script `name`: the parts of `lua/_lib.lua` it uses, then `lua/<name>.lua`."""
    body = _read(name)
    return library_for(body) + '\n' + body


# A top-level definition in _lib.lua: `local function name(` or `local name =`.
_DEFINES = re.compile(r'^local (?:function )?(\w+)', re.MULTILINE)


def library_for(body: str) -> str:
    """The parts of `lua/_lib.lua` that `body` uses, directly or through another part, in file order.

    The library is blank-line-separated parts of one definition each (with its comment). A
    definition a script never calls still costs Redis a closure on every call of the script.
    """
    parts = _read(LIBRARY).split('\n\n')
    defined = [_DEFINES.findall(part) for part in parts]
    used, words = [not names for names in defined], _words(body)
    changed = True
    while changed:
        changed = False
        for i, names in enumerate(defined):
            if not used[i] and words.intersection(names):
                used[i], changed = True, True
                words.update(_words(parts[i]))
    return '\n\n'.join(part for part, keep in zip(parts, used, strict=True) if keep)


def _words(lua: str) -> set[str]:
    # The names Lua code uses, comments left out: a comment naming a helper calls nothing.
    return set(re.findall(r'\w+', re.sub(r'--.*', '', lua)))


def _read(name: str) -> str:
    packaged = files('py_cachify') / 'lua' / f'{name}.lua'
    if packaged.is_file():
        return packaged.read_text(encoding='utf-8')
    # An editable install maps src/ only; the scripts then sit at the repository's top.
    return (Path(__file__).resolve().parents[2] / 'lua' / f'{name}.lua').read_text(encoding='utf-8')
