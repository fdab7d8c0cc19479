"""benchmarks/locks.py runs end to end (--quick, ours only) and reports every figure; it times nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.locks import ROWS

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_lock_and_cache_benchmark_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / 'locks.json'
    done = subprocess.run(
        [sys.executable, '-m', 'benchmarks.locks', '--quick', '--no-baseline', '--json', str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ours = json.loads(out.read_text())['medians']['ours']
    assert set(ours) == {key for key, *_ in ROWS}
    assert ours['stampede.tasks.computations'] == 1
    assert ours['stampede.threads.computations'] == 1
    assert ours['lock.sync.requests_per_pair'] == 2
    assert ours['cached.sync.requests_per_hit'] == 1
    assert '| Lock enter+exit, sync |' in done.stdout
