"""No answered decision is lost, and none is logged twice, whatever is SIGKILLed under load: the API process, the
shadow process, or both. Real processes (uvicorn on 127.0.0.1, its shadow process), a real Redis, real models.

Each scenario runs twice, killing at a different moment. After the kill (and a restart where the API died) the test
waits until the journal is empty and then holds the predictions stream to exact counts:

* every decision a client received (HTTP 200) is in the stream;
* no event id is in the stream twice;
* the stream holds nothing but decisions that were taken: at most the requests in flight at the kill (journaled,
  then killed before the answer went out) are in the stream without their client having seen them.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from shadowgate.local.redis import free_port
from tests.api.conftest import Registry
from tests.api.test_decisions import URL, _tx
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STREAM = "shadowgate:predictions"
CLIENTS = 4


class ApiProcess:
    """``uvicorn api.main:create_app`` in a process group of its own (with its fork server and shadow process)."""

    def __init__(self, home: Path, *, redis_url: str, registry: Registry) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "SHADOWGATE_HOME": str(home),
            "SHADOWGATE_REDIS_URL": redis_url,
            "SHADOWGATE_MLFLOW_TRACKING_URI": registry.mlflow.tracking_uri,
            "SHADOWGATE_SERVING_CUSTOMER_SALT": "durability-salt",
            "SHADOWGATE_SERVING_CHALLENGER_ALIASES": '["challenger"]',
            "SHADOWGATE_SERVING_MODEL_POLL_INTERVAL_S": "60",
            "SHADOWGATE_API_KEY": "durability-admin-key",
        }
        self.log = home / f"api-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", "1", "--log-level", "warning"]  # fmt: skip
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/health/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"API not ready in {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def health(self) -> dict[str, object]:
        ready: dict[str, object] = httpx.get(
            f"{self.base}/health/ready", timeout=5, headers={"X-API-Key": "durability-admin-key"}
        ).json()
        return ready

    def kill_group(self) -> None:
        """SIGKILL the API process, its fork server and its shadow process (by the group's id, the API's pid)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@dataclass
class Load:
    """Client threads sending decisions until stopped; what each received."""

    base: str
    answered: list[str] = field(default_factory=list)
    sent: int = 0
    failed: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def run(self, worker: int) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as client:
            i = worker * 1_000_000
            while not self.stop.is_set():
                i += 1
                with self.lock:
                    self.sent += 1
                try:
                    answer = client.post(URL, json=_tx(i))
                except httpx.HTTPError:
                    with self.lock:
                        self.failed += 1
                    time.sleep(0.05)
                    continue
                if answer.status_code == 200:
                    with self.lock:
                        self.answered.append(answer.json()["request_id"])
                else:
                    with self.lock:
                        self.failed += 1

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self.run, args=(w,), daemon=True) for w in range(CLIENTS)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def apis() -> Iterator[list[ApiProcess]]:
    started: list[ApiProcess] = []
    yield started
    for api in started:
        api.kill_group()  # every process group this test started, by its own id


def _wait_committed(api: ApiProcess, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        journal = api.health()["journal"]
        assert isinstance(journal, dict)
        if journal["pending_bytes"] == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"journal not committed in {timeout_s} s: {api.health()}")


def _stream_ids(redis_server: RedisServer) -> list[str]:
    return [fields["id"] for _, fields in redis_server.client().xrange(STREAM)]


def _load_until_killed(api: ApiProcess, kill: str, rng: random.Random) -> Load:
    with Load(api.base) as load:
        time.sleep(1.0 + rng.random() * 2.0)  # kill at a different moment each round
        with load.lock:
            answered_before = len(load.answered)
        if kill == "shadow":
            shadow = api.health()["shadow_process"]
            assert isinstance(shadow, dict)
            os.kill(int(shadow["pid"]), signal.SIGKILL)
            time.sleep(1.5)  # decisions go on while the shadow process is replaced
        elif kill == "api":
            os.kill(api.pid, signal.SIGKILL)  # the shadow process and fork server live on
        else:
            api.kill_group()
        time.sleep(0.3)
    assert answered_before > 50, "the load never got going"
    return load


@pytest.mark.parametrize("kill", ["shadow", "api", "both"])
def test_sigkill_under_load_loses_no_answered_decision_and_duplicates_none(
    kill: str, tmp_path: Path, redis_server: RedisServer, registry: Registry, apis: list[ApiProcess]
) -> None:
    rng = random.Random(f"durability-{kill}")
    home = tmp_path / "home"
    answered: list[str] = []
    in_flight = 0
    for _round in range(2):
        api = ApiProcess(home, redis_url=redis_server.url, registry=registry)
        apis.append(api)
        api.start()
        load = _load_until_killed(api, kill, rng)
        answered += load.answered
        if kill == "shadow":
            assert load.failed == 0  # the customer never notices
            _wait_committed(api)
            api.kill_group()  # the next round starts a fresh API on the same journal
        else:
            in_flight += CLIENTS  # each client had at most one request journaled but not answered
        # Each round ends with every process of this API dead, some by SIGKILL; the next start finishes the job.
    final = ApiProcess(home, redis_url=redis_server.url, registry=registry)
    apis.append(final)
    final.start()
    _wait_committed(final)
    ids = _stream_ids(redis_server)
    assert len(ids) == len(set(ids)), "an event was logged twice"
    missing = set(answered) - set(ids)
    assert not missing, f"{len(missing)} answered decisions are not in the stream"
    assert len(answered) == len(set(answered))
    assert len(ids) - len(answered) <= in_flight
    if kill == "shadow":
        assert len(ids) == len(answered)
