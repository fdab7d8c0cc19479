"""The scenarios of `python -m benchmarks`, in run order, and the module each one lives in.

The one list the runner (`run.py`), the scenario entry point (`scenarios.py`) and the table
(`report.py`) read; it imports nothing, so each of them can, in either side's interpreter.
"""

from __future__ import annotations

__all__ = ['SCENARIOS']

SCENARIOS: dict[str, str] = {
    'sequential': 'scenario_pairs',
    'floor': 'scenario_pairs',
    'requests': 'scenario_requests',
    'contention': 'scenario_contention',
    'processes': 'scenario_processes',
    'scale': 'scenario_scale',
    'size': 'scenario_pairs',
    'embedded': 'scenario_pairs',
    'waiting': 'scenario_waiting',
    'herd': 'scenario_herd',
    'fleet': 'scenario_fleet',
}
