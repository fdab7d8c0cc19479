"""The wheel carries the Lua scripts and py.typed, and the installed package reads them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_wheel_ships_every_lua_script_and_py_typed(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, '-m', 'build', '--wheel', '--outdir', str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob('*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    scripts = {f'py_cachify/lua/{path.name}' for path in (ROOT / 'lua').glob('*.lua')}
    assert scripts
    assert scripts <= names
    assert 'py_cachify/py.typed' in names


def test_the_package_reads_every_script() -> None:
    from py_cachify.ops import ScriptName
    from py_cachify.scripts import library_for, source

    library = (ROOT / 'lua' / '_lib.lua').read_text()
    for name in ScriptName.__args__:  # type: ignore[attr-defined]
        body = (ROOT / 'lua' / f'{name}.lua').read_text()
        # The parts of the library the script uses, in the library's order, then the script.
        assert source(name) == library_for(body) + '\n' + body
        assert all(part in library for part in library_for(body).split('\n\n'))
