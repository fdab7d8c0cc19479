"""The benchmark runner keeps working: a --quick run reports every scenario with sane figures.

Nothing here is timed: the figures depend on the machine. py-cachify 3.1.0 is measured too
when its virtualenv exists or can be made from PyPI in a few seconds; otherwise ours alone.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.baseline import BaselineUnavailable, ensure_baseline
from benchmarks.run import SCENARIOS

ROOT = Path(__file__).resolve().parents[1]

# A figure per scenario that any working run measures above zero, however loaded the machine.
# Not among them: counts over the fixed 0.3 s window of --quick (contention, processes: a loaded
# machine may not schedule a single enter in it), and "release returned -> entered" spans, which
# are below zero whenever the waiter enters before the holder's release call has returned.
POSITIVE = {
    'sequential': ['sync.per_s', 'async.per_s', 'sync.p50_us'],
    'floor': ['sync.ping.per_s', 'sync.evalsha.per_s', 'async.ping.per_s', 'async.evalsha.per_s'],
    'requests': ['sync.pair.requests', 'sync.pair.round_trips', 'async.pair.requests', 'sync.size.requests'],
    'contention': [],
    'processes': [],
    'scale': ['live10.acquire_p50_us', 'live1000.acquire_p50_us', 'live10.bytes_per_slot'],
    'size': ['sync.per_s', 'async.per_s'],
    'embedded': ['sync.per_s', 'async.per_s'],
    # Both sides poll; only ours can wait (OURS_ONLY).
    'waiting': ['proc.poll.sent_p50_ms', 'thread.poll.sent_p50_ms', 'async.poll.sent_p50_ms', 'proc.poll.requests'],
    'herd': [],  # ours only (OURS_ONLY)
    'fleet': [],  # counts over --quick's 0.3 s runs, like processes
}
OURS_ONLY = {
    'waiting': [
        'proc.wait.sent_p50_ms',
        'thread.wait.sent_p50_ms',
        'async.wait.sent_p50_ms',
        'proc.fair.sent_p50_ms',
        'proc.wait.requests',
    ],
    # A loaded machine may serve nobody in --quick's 1 s; the round trip it measured first is there.
    'herd': ['p1x800.target_per_s', 'p4x200fair.target_per_s'],
}


def baseline_flags() -> list[str]:
    try:
        ensure_baseline(timeout=20)
    except BaselineUnavailable:
        return ['--no-baseline']
    return []


@pytest.mark.slow
def test_quick_run_reports_every_scenario(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / 'results.json'
    flags = baseline_flags()
    done = subprocess.run(
        [sys.executable, '-m', 'benchmarks', '--quick', '--json', str(out), '--redis-url', redis_url, *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,  # the herd scenario alone spawns 25 processes and 3,200 threads: about 20 s
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    sides = ['ours'] if flags else ['ours', 'baseline']

    assert set(report['scenarios']) == set(SCENARIOS)
    assert set(POSITIVE) == set(SCENARIOS)
    for name, metrics in POSITIVE.items():
        for side in sides:
            measured = report['scenarios'][name][side]
            assert measured['errors'] == [], (name, side)
            assert_numbers(measured['median'])
            for metric in metrics + (OURS_ONLY.get(name, []) if side == 'ours' else []):
                assert measured['median'][metric] > 0, (name, side, metric)
    # A bound, not a timing: the independent counter never saw more holders than the pool allows.
    assert report['scenarios']['processes']['ours']['median']['over_limit'] == 0
    fleet = report['scenarios']['fleet']['ours']['median']
    assert [name for name, n in fleet.items() if name.endswith('.over_admitted') and n] == []
    assert len([name for name in fleet if name.endswith('.over_admitted')]) == 8  # 1, 2, 4, 8 on both layouts
    assert report['machine']['redis_server']
    assert report['table']
    assert '| Figure |' in done.stdout


def assert_numbers(metrics: dict[str, Any]) -> None:
    for name, value in metrics.items():
        assert isinstance(value, (int, float)), name
        assert math.isfinite(value), name
        # Spans from the release call's return to the waiter's entry may be negative (see POSITIVE).
        assert value >= 0 or name.endswith(('.p50_ms', '.p99_ms')), (name, value)


@pytest.mark.slow
def test_the_script_cost_run_reports_every_figure(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / 'cost.json'
    done = subprocess.run(
        [sys.executable, '-m', 'benchmarks.cost', '--quick', '--json', str(out), '--redis-url', redis_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    for step in ('uncontended', 'live100'):
        assert_numbers(report[step])
        for figure in ('acquire_us', 'release_us', 'bare_us', 'best_pair_us'):
            assert report[step][figure] > 0, (step, figure)
    for side in ('sync', 'async'):
        assert report[side]['pairs_per_s'] > 0
        assert report[side]['bare_per_s'] > 0
    assert report['growth']['live100000.pair_us'] > 0
    assert report['memory']['bytes_per_slot'] > 0
    assert {step.split('.')[0] for step in report['scale']} == {'shared', 'distinct'}
    assert all(row['enters_per_s'] > 0 for row in report['scale'].values())
    # --quick says so on what it prints, so nobody takes its figures for a full run's.
    assert '--quick' in done.stdout


@pytest.mark.parametrize('module', ['benchmarks', 'benchmarks.cost'])
def test_a_missing_server_is_a_one_line_error(module: str, tmp_path: Path) -> None:
    missing = tmp_path / 'no-redis-server'
    done = subprocess.run(
        [sys.executable, '-m', module, '--quick', '--no-baseline'][: 4 if module == 'benchmarks' else 3],
        cwd=ROOT,
        env={**os.environ, 'REDIS_SERVER': str(missing)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f'benchmarks: {missing} (from $REDIS_SERVER) is not an executable file; or pass --redis-url'
    ]
