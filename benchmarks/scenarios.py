"""One benchmark scenario, run in the interpreter of the side under test: ours or py-cachify 3.1.0.

Both packages import as `py_cachify` and share the pool API, so the runner starts this file
once per scenario, side and round, with that side's Python, and reads the one JSON line it
prints. Only the standard library, redis-py and `py_cachify` are imported: this file must also
run in the baseline's virtualenv, which has nothing else. Each scenario lives in a module of its
own (`scenario_*.py`, named in `registry.py`) on the shared `harness.py`.

    python benchmarks/scenarios.py --side ours --scenario sequential --redis-url redis://127.0.0.1:6390/0
"""

from __future__ import annotations

import argparse
import importlib
import json
import uuid
from collections.abc import Callable

from harness import Config, Result, cleanup, identity
from registry import SCENARIOS


def scenario(name: str) -> Callable[[Config], Result]:
    """The function that runs scenario `name`, from the module the registry names."""
    function: Callable[[Config], Result] = getattr(importlib.import_module(SCENARIOS[name]), name)
    return function


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--side', choices=('ours', 'baseline'), required=True)
    parser.add_argument('--scenario', choices=sorted(SCENARIOS), required=True)
    parser.add_argument('--redis-url', required=True)
    parser.add_argument('--quick', action='store_true')
    args = parser.parse_args()
    cfg = Config(side=args.side, url=args.redis_url, quick=args.quick, run_id=uuid.uuid4().hex[:12])
    try:
        result = scenario(args.scenario)(cfg)
    finally:
        cleanup(cfg)
    out = {'metrics': result.metrics, 'na': result.na, 'info': result.info, 'identity': identity()}
    print(json.dumps(out))


if __name__ == '__main__':
    main()
