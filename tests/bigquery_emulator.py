"""A local BigQuery emulator (bqemulator, in its own venv: ``make bqemu``) on 127.0.0.1, started and stopped by PID.

It speaks BigQuery's REST API, so the real google-cloud-bigquery client runs against it. It is itself a sqlglot →
DuckDB translator: it proves the client and wire path, not BigQuery's SQL semantics.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-bqemu"
PROJECT = "test-project"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BigQueryEmulator:
    """``with BigQueryEmulator(tmp) as bq: bq.endpoint``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.rest_port = _free_port()
        self.grpc_port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def start(self, timeout_s: float = 90.0) -> None:
        executable = VENV / "bin" / "bqemulator"
        if not executable.exists():
            raise RuntimeError(f"{executable} missing: run `make bqemu` (make test does)")
        # Its DuckDB loads the spatial extension from ~/.duckdb; the wheel ships it, so a private HOME gets a copy.
        home = self.workdir / "home"
        target = home / ".duckdb" / "extensions" / "v1.5.5" / "linux_amd64"
        target.mkdir(parents=True, exist_ok=True)
        [extension] = VENV.glob(
            "lib/python*/site-packages/duckdb_extension_spatial/extensions/*/spatial.duckdb_extension"
        )
        shutil.copy(extension, target)
        env = {**os.environ, "HOME": str(home), "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false"}
        argv = [str(executable), "start", "--rest-host", "127.0.0.1", "--rest-port", str(self.rest_port),
                "--grpc-host", "127.0.0.1", "--grpc-port", str(self.grpc_port), "--project", PROJECT,
                "--log-level", "warning"]  # fmt: skip
        log = (self.workdir / "bqemulator.log").open("wb")
        self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        url = f"{self.endpoint}/bigquery/v2/projects/{PROJECT}/datasets"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bqemulator exited: {(self.workdir / 'bqemulator.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"bqemulator not answering on {self.endpoint} after {timeout_s:g} s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)  # its own session: the group is exactly this emulator
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def __enter__(self) -> BigQueryEmulator:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
