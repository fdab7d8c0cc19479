"""Every Python snippet of the README runs as pasted (on the embedded store, or the suite's Redis)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = ROOT / 'README.md'
# A fence opening with exactly ```python; a snippet that must not run is preceded by <!-- no-run -->.
BLOCK = re.compile(r'(<!-- no-run -->\n)?```python\n(.*?)```', re.DOTALL)
SNIPPETS = [(m.start(), m[2]) for m in BLOCK.finditer(README.read_text()) if not m[1]]


def line_of(offset: int) -> str:
    return f'README.md:{README.read_text().count(chr(10), 0, offset) + 1}'


@pytest.mark.parametrize(('offset', 'code'), SNIPPETS, ids=[line_of(offset) for offset, _ in SNIPPETS])
def test_readme_snippet_runs_as_pasted(offset: int, code: str, redis_url: str, tmp_path: Path) -> None:
    # A snippet that names a Redis at localhost:6379 gets the suite's own server instead.
    code = code.replace('redis://localhost:6379/0', redis_url)
    script = tmp_path / 'snippet.py'
    script.write_text(code)
    # Run from the checkout's root, so a relative $PYTHONPATH (src) means what it means for pytest.
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, f'{line_of(offset)}:\n{result.stderr}'
    assert result.stderr == ''


def test_the_readme_has_snippets() -> None:
    assert len(SNIPPETS) >= 4
