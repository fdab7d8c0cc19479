"""The global API: init_cachify() configures the module-level pool and pooled."""

from __future__ import annotations

import redis

from py_cachify import CachifyPoolFullError, init_cachify, pool, pooled


def test_module_level_pools_follow_the_latest_global_init(redis_client: redis.Redis) -> None:
    p = pool('global-jobs', max_size=1)

    @pooled(key='global-{n}', max_size=1, raise_on_full=True)
    def work(n: int) -> int:
        return work.size(n)

    init_cachify()
    assert work(1) == 1
    with p:
        assert p.size() == 1

    init_cachify(redis_client, prefix='global-test-')
    with p:
        assert redis_client.zcard('{global-test-global-jobs}:slots') == 1
        try:
            with p:
                raise AssertionError('entered a full pool')
        except CachifyPoolFullError:
            pass
    assert work(2) == 1
    init_cachify()


def test_an_instance_that_is_not_global_leaves_the_global_alone() -> None:
    init_cachify(prefix='global-a-')
    local = init_cachify(prefix='global-b-', is_global=False)
    shared = pool('x', max_size=1)
    with local.pool('x', max_size=1):
        assert shared.size() == 0


def test_version_is_the_installed_distribution_s() -> None:
    import importlib.metadata
    import re
    from pathlib import Path

    import py_cachify

    pyproject = (Path(__file__).parents[1] / 'pyproject.toml').read_text()
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert declared is not None
    assert py_cachify.__version__ == importlib.metadata.version('py_cachify') == declared[1]
