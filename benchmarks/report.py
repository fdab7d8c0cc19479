"""Medians over rounds, ratios, floor fractions, and the one table the runner prints."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Literal

from benchmarks.registry import SCENARIOS

__all__ = ['ROWS', 'Row', 'SideRuns', 'render_markdown', 'table']

Better = Literal['higher', 'lower']


@dataclass
class SideRuns:
    """Every round of one scenario on one side."""

    rounds: list[dict[str, float]] = field(default_factory=list)
    na: dict[str, str] = field(default_factory=dict)
    info: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    identity: dict[str, Any] = field(default_factory=dict)

    def add(self, output: dict[str, Any]) -> None:
        self.rounds.append(output['metrics'])
        self.na.update(output['na'])
        self.info.append(output['info'])
        self.identity = output['identity']

    def medians(self) -> dict[str, float]:
        names = {name for metrics in self.rounds for name in metrics}
        return {
            name: statistics.median(metrics[name] for metrics in self.rounds if name in metrics)
            for name in sorted(names)
        }

    def to_json(self) -> dict[str, Any]:
        return {
            'median': self.medians(),
            'rounds': self.rounds,
            'na': self.na,
            'info': self.info,
            'errors': self.errors,
        }


@dataclass(frozen=True)
class Row:
    scenario: str
    metric: str
    label: str
    unit: str
    better: Better | None  # None: a bound that must hold, not something to rank
    # The figure as a fraction of floor/round trips, a metric of the same scenario: the
    # scenario times its own floor in the same process, in slices alternating with the figure.
    fraction: str | None = None
    # The baseline's figure when it is another metric than ours: ours waiting for a slot set
    # against 3.1.0's polling loop, since 3.1.0 cannot wait.
    baseline_metric: str | None = None

    def metric_for(self, side: str) -> str:
        return self.baseline_metric if side == 'baseline' and self.baseline_metric else self.metric


def _rows() -> list[Row]:
    rows: list[Row] = []
    for mode in ('sync', 'async'):
        rows += [
            Row(
                'sequential', f'{mode}.per_s', f'Sequential enter+exit, {mode}', 'pairs/s', 'higher', f'{mode}.of_floor'
            ),
            Row('sequential', f'{mode}.p50_us', f'Sequential enter+exit, {mode}: p50', 'µs', 'lower'),
            Row('sequential', f'{mode}.p99_us', f'Sequential enter+exit, {mode}: p99', 'µs', 'lower'),
        ]
    for mode in ('sync', 'async'):
        for op, name in (('ping', 'PING'), ('evalsha', 'EVALSHA `return 1`')):
            rows.append(Row('floor', f'{mode}.{op}.per_s', f'Floor: bare {name}, {mode}', 'calls/s', 'higher'))
    rows += [
        Row('requests', 'sync.pair.requests', 'Requests sent per enter+exit pair, sync', 'requests', 'lower'),
        Row('requests', 'sync.pair.round_trips', 'Round trips per enter+exit pair, sync', 'round trips', 'lower'),
        Row('requests', 'async.pair.requests', 'Requests sent per enter+exit pair, async', 'requests', 'lower'),
        Row('requests', 'sync.size.requests', 'Requests sent per size(), sync', 'requests', 'lower'),
        Row('requests', 'async.size.requests', 'Requests sent per asize(), async', 'requests', 'lower'),
        Row(
            'requests',
            'sync.pair.server_commands',
            'Commands Redis runs per pair (incl. in scripts)',
            'commands',
            'lower',
        ),
        Row('requests', 'sync.pair.server_cpu_us', 'Redis server CPU per pair', 'µs', 'lower'),
        Row('contention', 'enters_per_s', 'Contention, 64 tasks / pool of 8: enters', 'enters/s', 'higher'),
        Row('contention', 'max_inside', 'Contention: most inside at once (must reach 8)', 'holders', None),
        Row('contention', 'avg_inside', 'Contention: average inside (time-weighted)', 'holders', 'higher'),
        Row('contention', 'avg_releasing', 'Contention: average in exit, release not returned yet', 'holders', 'lower'),
        Row('contention', 'full_while_free', 'Contention: "full" answers while slots were free', 'answers', 'lower'),
        Row('contention', 'wait_p50_ms', 'Contention: wait to enter, p50', 'ms', 'lower'),
        Row('contention', 'wait_p99_ms', 'Contention: wait to enter, p99', 'ms', 'lower'),
        Row('contention', 'errors', 'Contention: errors other than "full"', 'errors', 'lower'),
        Row('processes', 'enters_per_s', '4 processes / pool of 2: enters', 'enters/s', 'higher'),
        Row('processes', 'max_holders', '4 processes: most holders seen (must stay <= 2)', 'holders', None),
    ]
    for n in (10, 1000, 100_000):
        rows.append(Row('scale', f'live{n}.acquire_p50_us', f'Acquire with {n:,} live slots: p50', 'µs', 'lower'))
    for n in (100, 1000, 100_000):
        rows.append(Row('scale', f'expired{n}.acquire_us', f'Acquire after {n:,} slots expired', 'µs', 'lower'))
    for n in (10, 1000, 100_000):
        rows.append(Row('scale', f'live{n}.bytes_per_slot', f'Redis memory per slot, {n:,} slots', 'bytes', 'lower'))
    for mode, call in (('sync', 'size()'), ('async', 'asize()')):
        rows.append(
            Row(
                'size',
                f'{mode}.per_s',
                f'{call} with 100 live slots',
                'calls/s',
                'higher',
                f'{mode}.of_floor',
            )
        )
    for mode in ('sync', 'async'):
        rows.append(Row('embedded', f'{mode}.per_s', f'Embedded default (no Redis), {mode}', 'pairs/s', 'higher'))
    return rows + _waiting_rows() + _herd_rows() + _fleet_rows()


# The fleets of scenario_herd.py: (metric prefix, what the label calls it).
HERD_FLEETS = (
    ('p1x800', '1 x 800'),
    ('p4x200', '4 x 200'),
    ('p16x50', '16 x 50'),
    ('p4x200fair', '4 x 200, fair=True'),
)


def _herd_rows() -> list[Row]:
    """Scenario 10: one slot held 1 ms, processes x waiting threads; ours only (3.1.0 cannot wait)."""
    rows: list[Row] = []
    for prefix, fleet in HERD_FLEETS:
        name = f'Herd, {fleet} waiters, one slot held 1 ms'
        rows += [
            Row('herd', f'{prefix}.handovers_per_s', f'{name}: hand-overs', 'per s', 'higher'),
            Row('herd', f'{prefix}.of_target', f'{name}: hand-overs of 0.7 / (hold + RTT)', 'fraction', 'higher'),
            Row('herd', f'{prefix}.acquire_evalsha', f'{name}: acquire EVALSHA per acquire', 'requests', 'lower'),
            Row('herd', f'{prefix}.tries_per_wait', f'{name}: tries per completed wait', 'requests', 'lower'),
            Row('herd', f'{prefix}.evalsha', f'{name}: all EVALSHA per acquire', 'requests', 'lower'),
            Row('herd', f'{prefix}.never_served', f'{name}: waiters never served in 8 s', 'waiters', 'lower'),
            Row('herd', f'{prefix}.jain', f"{name}: Jain's index over waiters", 'index', 'higher'),
        ]
    return rows


# The layouts and process counts of scenario_fleet.py, and what a fleet row reports.
FLEET_LAYOUTS = (('shared', 'one pool of 64'), ('distinct', 'a pool of 64 each'))
FLEET_COUNTS = (1, 2, 4, 8)
FLEET_RUN_LABEL = '2 s runs'
_FLEET_FIGURES: tuple[tuple[str, str, str, Better | None], ...] = (
    ('enters_per_s', 'enters', 'enters/s', 'higher'),
    ('full', '"full" answers', 'answers', 'lower'),
    ('over_admitted', 'over-admissions (must be 0)', 'holders', None),
    ('pair_us', 'Redis CPU per pair, commandstats usec', 'µs', 'lower'),
    ('ceiling_per_s', 'projected ceiling of one Redis core, from commandstats', 'pairs/s', 'higher'),
    ('cpu_pair_us', 'Redis main-thread CPU per pair', 'µs', 'lower'),
    ('cpu_ceiling_per_s', 'projected ceiling of one Redis core, from main-thread CPU', 'pairs/s', 'higher'),
)


def _fleet_rows() -> list[Row]:
    """Scenario 11: N processes entering and exiting back to back, on one shared pool and on a pool each."""
    rows: list[Row] = []
    for layout, where in FLEET_LAYOUTS:
        for metric, figure, unit, better in _FLEET_FIGURES:
            for n in FLEET_COUNTS:
                label = f'Fleet, {n} process{"es" if n > 1 else ""} on {where} ({FLEET_RUN_LABEL}): {figure}'
                rows.append(Row('fleet', f'{layout}.p{n}.{metric}', label, unit, better))
    rows += [
        Row('fleet', 'errors', 'Fleet: errors other than "full"', 'errors', 'lower'),
        Row(
            'fleet',
            'foreign_calls',
            'Fleet: signs of other clients on the server during the runs (must be 0)',
            'count',
            None,
        ),
    ]
    return rows


# The polling interval is POLL_S, and the long wait LONG_HOLD_S (LONG_WAIT_LABEL), in scenarios.py.
WAITS = 'ours waits, 3.1.0 polls 10 ms'
POLLS = 'both poll 10 ms'


def _waiting_rows() -> list[Row]:
    """Scenario 9. `x.wait` is ours with nowait=False; `x.poll` a 10 ms polling loop on either side."""
    rows: list[Row] = []
    setups = (
        ('proc', '2 processes'),
        ('thread', '2 threads'),
        ('async', '2 asyncio tasks'),
        ('async', '2 asyncio tasks, sync client too'),
    )
    for setup, name in setups:
        ours = 'async.wait_thread' if name.endswith('too') else f'{setup}.wait'
        for q in ('p50', 'p99'):
            label, theirs = f'Hand-over, {name}: {q} ({WAITS})', f'{setup}.poll.{q}_ms'
            rows.append(Row('waiting', f'{ours}.{q}_ms', label, 'ms', 'lower', baseline_metric=theirs))
    for q in ('p50', 'p99'):
        rows.append(
            Row('waiting', f'proc.fair.{q}_ms', f'Hand-over, 2 processes, fair=True: {q} (ours waits)', 'ms', 'lower')
        )
    for setup, name in (('proc', '2 processes'), ('async', '2 asyncio tasks')):
        for q in ('p50', 'p99'):
            rows.append(Row('waiting', f'{setup}.poll.{q}_ms', f'Hand-over, {name}: {q} ({POLLS})', 'ms', 'lower'))
    rows += [
        Row(
            'waiting',
            'proc.wait.sent_p99_ms',
            f'Release sent to new holder, 2 processes: p99 ({WAITS})',
            'ms',
            'lower',
            baseline_metric='proc.poll.sent_p99_ms',
        ),
        Row(
            'waiting',
            'proc.wait.requests',
            f'Requests sent per waited acquire, 2 processes ({WAITS})',
            'requests',
            'lower',
            baseline_metric='proc.poll.requests',
        ),
        Row(
            'waiting',
            'proc.poll.requests',
            f'Requests sent per waited acquire, 2 processes ({POLLS})',
            'requests',
            'lower',
        ),
        Row(
            'waiting',
            'async.wait.requests',
            f'Requests sent per waited acquire, 2 asyncio tasks ({WAITS})',
            'requests',
            'lower',
            baseline_metric='async.poll.requests',
        ),
        Row(
            'waiting',
            'long.wait.requests',
            f'Requests sent per acquire that waited 1.5 s ({WAITS})',
            'requests',
            'lower',
            baseline_metric='long.poll.requests',
        ),
        Row(
            'waiting',
            'long.poll.requests',
            f'Requests sent per acquire that waited 1.5 s ({POLLS})',
            'requests',
            'lower',
        ),
        Row(
            'waiting',
            'proc.wait.server_commands',
            f'Commands Redis runs per hand-over cycle, 2 processes ({WAITS})',
            'commands',
            'lower',
            baseline_metric='proc.poll.server_commands',
        ),
        Row(
            'waiting',
            'proc.poll.server_commands',
            f'Commands Redis runs per hand-over cycle, 2 processes ({POLLS})',
            'commands',
            'lower',
        ),
        Row(
            'waiting',
            'proc.wait.server_cpu_us',
            f'Redis server CPU per hand-over cycle, 2 processes ({WAITS})',
            'µs',
            'lower',
            baseline_metric='proc.poll.server_cpu_us',
        ),
        Row(
            'waiting',
            'long.wait.server_commands',
            f'Commands Redis runs per hand-over cycle with a 1.5 s wait ({WAITS})',
            'commands',
            'lower',
            baseline_metric='long.poll.server_commands',
        ),
    ]
    return rows


ROWS = _rows()
# A row names its scenario as the registry does; a renamed or dropped scenario fails here, at import.
_UNKNOWN = {row.scenario for row in ROWS} - set(SCENARIOS)
if _UNKNOWN:
    raise ImportError(f'report rows name scenarios the registry does not have: {sorted(_UNKNOWN)}')


def ratio(ours: float | None, baseline: float | None, better: Better | None) -> float | None:
    """How many times better ours is (> 1: ours is better), whichever way "better" points."""
    if better is None or ours is None or baseline is None or ours == 0 or baseline == 0:
        return None
    return ours / baseline if better == 'higher' else baseline / ours


def table(results: dict[str, dict[str, SideRuns]]) -> list[dict[str, Any]]:
    """One entry per row that either side measured or marked N/A."""
    entries: list[dict[str, Any]] = []
    medians = {scenario: {side: runs.medians() for side, runs in sides.items()} for scenario, sides in results.items()}
    for row in ROWS:
        sides = results.get(row.scenario, {})
        cells: dict[str, Any] = {}
        for side, runs in sides.items():
            metric = row.metric_for(side)
            value = medians[row.scenario][side].get(metric)
            cells[side] = {
                'metric': metric,
                'value': value,
                'na': runs.na.get(metric) if value is None else None,
                'error': '; '.join(runs.errors) if value is None and runs.errors else None,
                'floor_fraction': medians[row.scenario][side].get(row.fraction) if row.fraction else None,
            }
        if not any(c['value'] is not None or c['na'] or c['error'] for c in cells.values()):
            continue
        ours, base = (cells.get(side, {}).get('value') for side in ('ours', 'baseline'))
        entries.append(
            {
                'scenario': row.scenario,
                'metric': row.metric,
                'label': measured_label(row.label, sides),
                'unit': row.unit,
                'better': row.better,
                'ours': cells.get('ours'),
                'baseline': cells.get('baseline'),
                'advantage': ratio(ours, base, row.better),
            }
        )
    return entries


# The durations labels name: what a scenario holds or runs for without --quick, and the info
# entry where it records what it did. A --quick run is shorter, and its rows must say what was
# measured, not what a full run would have.
LONG_WAIT_LABEL = '1.5 s'
MEASURED = {LONG_WAIT_LABEL: 'long_hold_s', 'in 8 s': 'run_s', FLEET_RUN_LABEL: 'run_s'}
_DURATION = re.compile(r'\d+(?:\.\d+)? s')


def measured_label(label: str, sides: dict[str, SideRuns]) -> str:
    """`label`, naming the durations the rounds actually held or ran for (scenarios record them in info)."""
    for text, entry in MEASURED.items():
        if text not in label:
            continue
        took = sorted({info[entry] for runs in sides.values() for info in runs.info if entry in info})
        named = [f'{h:g} s' for h in took]
        said = match.group() if (match := _DURATION.search(text)) else text
        if took and named != [said]:
            label = label.replace(text, text.replace(said, ' / '.join(named)))
    return label


def fmt(value: float | None) -> str:
    if value is None:
        return ''
    if abs(value) >= 1000:
        return f'{value:,.0f}'
    if abs(value) >= 100 or value == int(value):
        return f'{value:.0f}'
    return f'{value:.3g}' if abs(value) < 10 else f'{value:.1f}'


def _cell(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return 'not run'
    if cell['value'] is not None:
        return fmt(cell['value'])
    return 'error' if cell['error'] else 'N/A'


def _fraction(cell: dict[str, Any] | None) -> str:
    if cell is None or cell['floor_fraction'] is None:
        return ''
    return f'{cell["floor_fraction"]:.2f}'


def render_markdown(entries: list[dict[str, Any]]) -> str:
    """The table as Markdown: readable in a terminal, pasteable into the README as is."""
    lines = [
        '| Figure | Unit | ours | py-cachify 3.1.0 | ours vs 3.1.0 | ours of floor | 3.1.0 of floor |',
        '| --- | --- | ---: | ---: | ---: | ---: | ---: |',
    ]
    for e in entries:
        advantage = f'{e["advantage"]:.2f}x' if e['advantage'] is not None else ''
        cells = (
            e['label'],
            e['unit'],
            _cell(e['ours']),
            _cell(e['baseline']),
            advantage,
            _fraction(e['ours']),
            _fraction(e['baseline']),
        )
        lines.append('| ' + ' | '.join(cells) + ' |')
    notes = sorted(
        {
            f'{e["label"]}: {side} N/A: {e[side]["na"]}'
            for e in entries
            for side in ('ours', 'baseline')
            if e[side] and e[side]['na']
        }
    )
    return '\n'.join(lines + ([''] + [f'- {note}' for note in notes] if notes else []))
