"""py-cachify 3.1.0's own tests of its public API, run unmodified against this package.

The tests are obtained at test time, never committed: from the py-cachify==3.1.0 sdist
(`pip download --no-binary :all: --no-deps`), or from the directory $PY_CACHIFY_UPSTREAM_TESTS
(a checkout of github.com/EzyGang/py-cachify at v3.1.0, holding `tests/` and
`integration_tests/`). The sdist on PyPI ships only the package, README, LICENSE and
pyproject: without that directory the test says so and skips, as it does when PyPI cannot be
reached.

A test module runs if it touches public names only: it imports from `py_cachify` itself
(never `py_cachify._backend...`) and patches nothing inside the package by dotted path. The
others exercise 3.1.0's internals (its MemoryCache, pickled pool state, meta-lock) and are
left out, listed in the output. Upstream's conftest files reach into those internals too, and
point at a Redis on localhost:6379; they are replaced by `_CONFTEST`, which gives the same
fixtures on a redis-server this test starts (db 0 sync, db 1 async, db 2/3 the second client).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .redis_server import RedisServer

SDIST = 'py-cachify==3.1.0'
SUITES = ('integration_tests', 'tests')

_CONFTEST = '''
"""Upstream's fixtures, on this package's API and a redis-server of the harness's own."""
import os

import pytest
import redis
import redis.asyncio

import py_cachify
from py_cachify import init_cachify, settings

URL = os.environ['UPSTREAM_REDIS_URL']


def _client(db, asynchronous=False):
    module = redis.asyncio if asynchronous else redis
    return module.Redis.from_url(URL, db=db)


@pytest.fixture(scope='session', autouse=True)
def scripts_loaded():
    # A server that has run the scripts once, as any server in use has: upstream's tests give
    # a thread 10 ms to take a lock, less than a first SCRIPT LOAD may take on a loaded machine.
    warm = init_cachify(_client(0), is_global=False)
    with warm.lock('warm-up'):
        pass
    warm.close()


@pytest.fixture({autouse})
def init_cachify_fixture():
    {init}
    yield
    settings._global = None


@pytest.fixture
def cachify_local_in_memory_client():
    return init_cachify(is_global=False)


@pytest.fixture
def cachify_local_redis_second():
    return init_cachify(_client(2), _client(3, asynchronous=True), is_global=False)
'''
_INIT = {
    'integration_tests': ('autouse=True', 'init_cachify(_client(0), _client(1, asynchronous=True))'),
    'tests': ('', 'init_cachify()'),
}


def touches_only_public_names(source: str) -> str | None:
    """None if the module uses py_cachify's public names only; else why not."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('py_cachify.'):
            return f'imports from {node.module}'
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith('py_cachify.'):
                    return f'imports {alias.name}'
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith('py_cachify.'):
            return f'patches {node.value}'
    return None


def obtain(tmp_path: Path) -> Path:
    """The directory holding upstream's `tests/` and `integration_tests/`, or skip saying why not."""
    given = os.environ.get('PY_CACHIFY_UPSTREAM_TESTS')
    if given:
        return Path(given)
    download = subprocess.run(
        [sys.executable, '-m', 'pip', 'download', '--no-binary', ':all:', '--no-deps', '-d', str(tmp_path), SDIST],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    archives = list(tmp_path.glob('py_cachify-3.1.0.tar.gz'))
    if download.returncode != 0 or not archives:
        pytest.skip(f'the package index is unreachable: pip download {SDIST} failed: {download.stderr[-500:]}')
    with tarfile.open(archives[0]) as sdist:
        sdist.extractall(tmp_path / 'sdist', filter='data')
    root = tmp_path / 'sdist' / 'py_cachify-3.1.0'
    if not any((root / suite).is_dir() for suite in SUITES):
        shipped = sorted(p.name for p in root.iterdir())
        pytest.skip(
            f'the {SDIST} sdist ships no tests (it holds {shipped}); set PY_CACHIFY_UPSTREAM_TESTS to a '
            'checkout of github.com/EzyGang/py-cachify at v3.1.0 to run them'
        )
    return root


@pytest.mark.slow
def test_py_cachify_3_1_0_public_api_tests_pass(tmp_path: Path) -> None:
    pytest.importorskip('pytest_mock', reason='upstream tests use pytest-mock (mocker.spy)')
    upstream = obtain(tmp_path)
    run_dir = tmp_path / 'run'
    selected: list[str] = []
    left_out: dict[str, str] = {}
    for suite in SUITES:
        if not (upstream / suite).is_dir():
            continue
        (run_dir / suite).mkdir(parents=True)
        autouse, init = _INIT[suite]
        conftest = _CONFTEST.replace('{autouse}', autouse).replace('{init}', init)
        (run_dir / suite / 'conftest.py').write_text(textwrap.dedent(conftest))
        for module in sorted((upstream / suite).glob('test_*.py')):
            why = touches_only_public_names(module.read_text())
            if why is None:
                shutil.copy(module, run_dir / suite / module.name)
                selected.append(f'{suite}/{module.name}')
            else:
                left_out[f'{suite}/{module.name}'] = why
    print('\nupstream modules run:', *selected, sep='\n  ')
    print('left out (private internals):', *(f'{m}: {why}' for m, why in left_out.items()), sep='\n  ')
    assert selected, f'no upstream test module touches public names only: {left_out}'

    src = Path(__file__).resolve().parents[1] / 'src'
    report = tmp_path / 'report.xml'
    with RedisServer() as server:
        env = {
            **os.environ,
            'UPSTREAM_REDIS_URL': server.url,
            'PYTHONPATH': os.pathsep.join([str(src), *sys.path]),
        }
        done = subprocess.run(
            [
                sys.executable,
                '-m',
                'pytest',
                '-q',
                '-p',
                'no:cacheprovider',
                '-p',
                'pytest_mock',
                '-o',
                'asyncio_mode=auto',
                '-o',
                'asyncio_default_fixture_loop_scope=function',
                '--rootdir',
                str(run_dir),
                '-c',
                os.devnull,
                f'--junitxml={report}',
                *selected,
            ],
            cwd=run_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    print(done.stdout[-6000:], done.stderr[-2000:])
    cases = ET.parse(report).getroot().iter('testcase')
    outcomes = {f'{c.get("classname")}::{c.get("name")}': [x.tag for x in c] for c in cases}
    failed = {name: tags for name, tags in outcomes.items() if {'failure', 'error'} & set(tags)}
    assert outcomes, 'no upstream test ran'
    assert not failed, f'upstream tests failed: {sorted(failed)}'
    assert done.returncode == 0
