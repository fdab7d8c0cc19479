"""Check that mypy --strict and pyright report every line marked `# wrong` in tests/typing/wrong/, and no other.

Run by `tox -e types`: `python tests/typing/must_fail.py`. Exits non-zero, saying which lines differ.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def marked(path: Path) -> set[int]:
    return {n for n, line in enumerate(path.read_text().splitlines(), 1) if line.rstrip().endswith('# wrong')}


def mypy_lines(path: Path) -> set[int]:
    done = subprocess.run(
        [sys.executable, '-m', 'mypy', '--strict', '--no-incremental', str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    name = re.escape(path.name)
    return {int(m[1]) for m in re.finditer(rf'^[^\n]*{name}:(\d+): error:', done.stdout, re.MULTILINE)}


def pyright_lines(path: Path) -> set[int]:
    done = subprocess.run(['pyright', '--outputjson', str(path)], capture_output=True, text=True, cwd=ROOT, check=False)
    report = json.loads(done.stdout)
    return {d['range']['start']['line'] + 1 for d in report['generalDiagnostics'] if d['severity'] == 'error'}


def main() -> int:
    failed = False
    for path in sorted((HERE / 'wrong').glob('*.py')):
        want = marked(path)
        checkers = [('mypy', mypy_lines)]
        if '--no-pyright' not in sys.argv:
            checkers.append(('pyright', pyright_lines))
        for checker, lines in checkers:
            got = lines(path)
            if got != want:
                failed = True
                print(
                    f'{path.name} under {checker}: missed lines {sorted(want - got)}, unexpected {sorted(got - want)}'
                )
            else:
                print(f'{path.name} under {checker}: all {len(want)} mistakes reported')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
