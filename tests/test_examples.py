"""Every example runs on the embedded default and prints what its docstring says."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / 'examples').glob('*.py'))


@pytest.mark.parametrize('example', EXAMPLES, ids=lambda path: path.name)
def test_example_prints_what_it_documents(example: Path) -> None:
    doc = ast.get_docstring(ast.parse(example.read_text()))
    assert doc is not None
    assert 'Prints:\n' in doc
    expected = doc.split('Prints:\n', 1)[1].strip()
    result = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == expected
    assert result.stderr == ''


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 5


def test_the_typing_user_script_runs() -> None:
    # What tests/typing/user_script.py asserts about types, it also does at run time.
    script = Path(__file__).parent / 'typing' / 'user_script.py'
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ''


def test_the_load_shedding_example_admits_exactly_8_of_15_on_a_real_redis(redis_url: str) -> None:
    example = Path(__file__).parents[1] / 'examples' / 'load_shedding.py'
    env = {**os.environ, 'EXAMPLE_REDIS_URL': redis_url}
    result = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=False, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'admitted 8 of 15, shed 7, 8/10 busy'
    assert result.stderr == ''
