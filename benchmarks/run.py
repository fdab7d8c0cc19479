"""Run every scenario for ours and for py-cachify 3.1.0, interleaved, and print one table.

    python -m benchmarks                          # full run: 5 rounds, about 5 minutes on 2 cores
    python -m benchmarks --quick --json out.json  # about 15 seconds, to check it works

Starts its own redis-server on a free loopback port unless --redis-url is given, and makes
benchmarks/.baseline-venv (py-cachify 3.1.0) on first use. Each scenario runs in a fresh
process of the side's own interpreter (benchmarks/scenarios.py), one round of ours, then
one of the baseline, and again: A B A B, so machine noise falls on both alike. Figures are
medians over the rounds.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `python benchmarks/run.py` puts benchmarks/, not the repo, on the path

import redis  # noqa: E402

from benchmarks.baseline import BASELINE, VENV, BaselineUnavailable, ensure_baseline  # noqa: E402
from benchmarks.registry import SCENARIOS as REGISTRY  # noqa: E402
from benchmarks.report import SideRuns, render_markdown, table  # noqa: E402
from benchmarks.servers import ServerUnavailable, find_binary, own_server  # noqa: E402

__all__ = ['SCENARIOS', 'main']

SCENARIO_SCRIPT = REPO / 'benchmarks' / 'scenarios.py'
SCENARIOS = tuple(REGISTRY)  # in run order
SCENARIO_TIMEOUT_S = 300  # the slowest full scenario takes about 15 s


class ScenarioFailed(RuntimeError):
    """One scenario process failed: recorded, and the run goes on."""


class WrongPackage(RuntimeError):
    """A side imported a py_cachify other than the one it is meant to measure: nothing is valid."""


@dataclass(frozen=True)
class Side:
    name: str  # 'ours' or 'baseline'
    python: str
    env: dict[str, str]


def ours_side() -> Side:
    # This checkout's src/ first, whatever else is installed.
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO / 'src'), env.get('PYTHONPATH')]))
    return Side('ours', sys.executable, env)


def baseline_side() -> Side:
    # No PYTHONPATH at all: nothing of ours may shadow the baseline.
    env = {name: value for name, value in os.environ.items() if name != 'PYTHONPATH'}
    return Side('baseline', str(ensure_baseline()), env)


def run_one(side: Side, scenario: str, url: str, quick: bool) -> dict[str, Any]:
    command = [side.python, str(SCENARIO_SCRIPT), '--side', side.name, '--scenario', scenario, '--redis-url', url]
    if quick:
        command.append('--quick')
    try:
        done = subprocess.run(
            command, env=side.env, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ScenarioFailed(f'{scenario} ({side.name}) took longer than {SCENARIO_TIMEOUT_S} s') from exc
    if done.returncode != 0 or not done.stdout.strip():
        tail = done.stderr.strip().splitlines()[-1:] or ['no output']
        raise ScenarioFailed(f'{scenario} ({side.name}) exited {done.returncode}: {tail[0]}')
    output: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    check_identity(side, output['identity'])
    return output


def check_identity(side: Side, identity: dict[str, Any]) -> None:
    path = Path(identity['py_cachify_file']).resolve()
    if side.name == 'ours':
        right = path.is_relative_to(REPO / 'src')
    else:
        right = path.is_relative_to(VENV.resolve()) and identity['py_cachify_version'] == BASELINE.split('==')[1]
    if not right:
        raise WrongPackage(f'the {side.name} side imported {path} ({identity["py_cachify_version"]})')


def run_all(
    sides: list[Side], scenarios: list[str], url: str, rounds: int, quick: bool
) -> dict[str, dict[str, SideRuns]]:
    results = {scenario: {side.name: SideRuns() for side in sides} for scenario in scenarios}
    total, step = len(scenarios) * rounds * len(sides), 0
    for scenario in scenarios:
        for round_no in range(1, rounds + 1):
            for side in sides:  # A B A B: both sides get each stretch of machine noise alike
                step += 1
                started = time.perf_counter()
                runs = results[scenario][side.name]
                try:
                    runs.add(run_one(side, scenario, url, quick))
                    status = 'ok'
                except ScenarioFailed as exc:
                    runs.errors.append(str(exc))
                    status = f'FAILED: {exc}'
                took = time.perf_counter() - started
                log(f'[{step}/{total}] {scenario} round {round_no}/{rounds} {side.name}: {took:.1f} s {status}')
    return results


def log(message: str) -> None:
    print(f'benchmarks: {message}', file=sys.stderr, flush=True)


# -- where it ran ----------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path('/proc/meminfo').read_text().splitlines():
            if line.startswith('MemTotal:'):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def optional_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def git(*args: str) -> str | None:
    try:
        done = subprocess.run(['git', *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def machine(url: str, server_binary: str) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    try:
        server: dict[str, Any] = client.info('server')
    finally:
        client.close()
    return {
        'cpu': cpu_model(),
        'cores': os.cpu_count(),
        'memory_gib': memory_gib(),
        'os': platform.platform(),
        'python': platform.python_version(),
        'redis_server': server['redis_version'],
        'redis_server_binary': server_binary,
        'redis_py': optional_version('redis'),
        'hiredis': optional_version('hiredis'),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'load_average_at_start': load_average(),
    }


def load_average() -> list[float] | None:
    # Other work on the machine shows here; interleaving spreads it over both sides alike.
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, 'getloadavg') else None


def ours_revision() -> dict[str, Any]:
    status = git('status', '--porcelain', '--', 'src', 'lua')
    return {'commit': git('rev-parse', 'HEAD'), 'src_or_lua_modified': bool(status) if status is not None else None}


@contextmanager
def redis_server(url: str | None) -> Iterator[tuple[str, str]]:
    """(url, what serves it): the given URL, or a redis-server of our own for the run."""
    if url:
        yield url, 'external (--redis-url)'
        return
    binary = find_binary()
    with own_server() as started:
        yield started, binary


# -- command line ----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='python -m benchmarks', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--quick', action='store_true', help='about 15 s: tiny loops, one round, smaller pools')
    parser.add_argument('--json', type=Path, metavar='PATH', help='also write every figure and the machine here')
    parser.add_argument('--redis-url', help='use this Redis instead of starting one (server CPU figures need it idle)')
    parser.add_argument('--rounds', type=int, help='rounds per side and scenario (default 5, or 1 with --quick)')
    parser.add_argument(
        '--only', action='append', metavar='SCENARIO', help=f'run only these (repeat or comma-separate): {SCENARIOS}'
    )
    parser.add_argument('--no-baseline', action='store_true', help='measure ours only (no py-cachify 3.1.0 venv)')
    args = parser.parse_args(argv)
    args.scenarios = [name for item in args.only or [','.join(SCENARIOS)] for name in item.split(',') if name]
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f'unknown scenario(s) {unknown}; choose from {SCENARIOS}')
    args.rounds = args.rounds or (1 if args.quick else 5)
    if args.rounds < 1:
        parser.error('--rounds must be at least 1')
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(['python', '-m', 'benchmarks', *(sys.argv[1:] if argv is None else argv)])
    if not args.redis_url:
        try:
            find_binary()  # before the baseline's install, which can take 15 s
        except ServerUnavailable as exc:
            log(str(exc))
            return 2
    sides = [ours_side()]
    if not args.no_baseline:
        try:
            sides.append(baseline_side())
        except BaselineUnavailable as exc:
            log(f'cannot make the baseline venv ({exc}); run with --no-baseline to measure ours alone')
            return 2
    with redis_server(args.redis_url) as (url, server_binary):
        where = machine(url, server_binary)
        try:
            results = run_all(sides, args.scenarios, url, args.rounds, args.quick)
        except WrongPackage as exc:
            log(str(exc))
            return 2
    where['load_average_at_end'] = load_average()
    entries = table(results)
    print(header(where, command, args))
    print(render_markdown(entries))
    if args.json:
        args.json.write_text(json.dumps(report(where, command, args, results, entries), indent=2) + '\n')
        log(f'wrote {args.json}')
    failed = [error for sides_runs in results.values() for runs in sides_runs.values() for error in runs.errors]
    return 1 if failed else 0


def header(where: dict[str, Any], command: str, args: argparse.Namespace) -> str:
    revision = ours_revision()
    return (
        f'\n{command}\n'
        f'{where["date"]}  ours {revision["commit"] or "(no git)"}'
        f'{" (src/lua modified)" if revision["src_or_lua_modified"] else ""} vs {BASELINE}\n'
        f'{where["cpu"]}, {where["cores"]} cores, {where["memory_gib"]} GiB; {where["os"]}; Python {where["python"]}; '
        f'redis-server {where["redis_server"]}; redis-py {where["redis_py"]}, hiredis {where["hiredis"]}\n'
        f'medians of {args.rounds} round(s) per side, interleaved A B A B\n'
    )


def report(
    where: dict[str, Any],
    command: str,
    args: argparse.Namespace,
    results: dict[str, dict[str, SideRuns]],
    entries: list[dict[str, Any]],
) -> dict[str, Any]:
    scenarios: dict[str, Any] = {
        scenario: {side: runs.to_json() for side, runs in sides.items()} for scenario, sides in results.items()
    }
    identities = {side: runs.identity for sides in results.values() for side, runs in sides.items() if runs.identity}
    return {
        'command': command,
        'machine': where,
        'ours': {**ours_revision(), **identities.get('ours', {})},
        'baseline': {'requirement': BASELINE, **identities.get('baseline', {})} if not args.no_baseline else None,
        'config': {
            'rounds': args.rounds,
            'quick': args.quick,
            'order': 'per scenario: round 1 ours then baseline, round 2 ours then baseline, ... (A B A B)',
            'figures': 'median over rounds of each per-round figure (p50/p99 are per round, then the median)',
        },
        'scenarios': scenarios,
        'table': entries,
    }


if __name__ == '__main__':
    raise SystemExit(main())
