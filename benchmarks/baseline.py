"""The baseline's virtualenv: py-cachify 3.1.0 beside the same redis-py (and hiredis) as ours.

py-cachify 3.1.0 imports as `py_cachify` too, so it cannot share our interpreter: it gets a
virtualenv of its own, made on first use. redis-py and hiredis are pinned to the versions the
runner's own interpreter has, so the two sides differ by the pool library alone.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

__all__ = ['BASELINE', 'VENV', 'BaselineUnavailable', 'ensure_baseline', 'requirements']

BASELINE = 'py-cachify==3.1.0'
# Outside the checkout, so that running the benchmarks (or the tests) never writes into it.
VENV = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'py_cachify' / 'baseline-venv'
_STAMP = 'benchmark-requirements.txt'  # what was installed, so a changed pin reinstalls


class BaselineUnavailable(RuntimeError):
    """The baseline virtualenv could not be made (no network to PyPI, no venv module, ...)."""


def requirements() -> list[str]:
    reqs = [BASELINE, f'redis=={importlib.metadata.version("redis")}']
    # Without hiredis here, ours runs on redis-py's pure-Python parser, so the baseline must too.
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        reqs.append(f'hiredis=={importlib.metadata.version("hiredis")}')
    return reqs


def venv_python(venv: Path) -> Path:
    return venv / ('Scripts/python.exe' if os.name == 'nt' else 'bin/python')


def ensure_baseline(venv: Path = VENV, timeout: float | None = None) -> Path:
    """The baseline venv's python, creating or updating the venv if needed."""
    reqs = requirements()
    wanted = '\n'.join(reqs) + '\n'
    python = venv_python(venv)
    stamp = venv / _STAMP
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f'benchmarks: installing {" ".join(reqs)} into {venv}', file=sys.stderr)
    if not python.exists():
        _run([sys.executable, '-m', 'venv', str(venv)], timeout)
    _run([str(python), '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', *reqs], timeout)
    stamp.write_text(wanted)
    return python


def _run(command: list[str], timeout: float | None) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BaselineUnavailable(f'{" ".join(command)}: {exc}') from exc
    if done.returncode != 0:
        raise BaselineUnavailable(f'{" ".join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}')
