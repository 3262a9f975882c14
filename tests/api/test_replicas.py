"""Replicas and the shared experiment book: two real API servers (uvicorn, separate processes) on one private Redis
agree through a canary ramp-up (same arm for every customer at every step, nobody back from treatment to control, one
audit entry per change); a replica whose Redis is down keeps serving its book and refuses changes with 503."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shadowgate.contract import example_transaction
from shadowgate.decisioning import experiments as ex
from shadowgate.local.redis import free_port
from shadowgate.serving.assignment import arm_for, unit_bucket
from shadowgate.serving.runtime import Runtime
from tests.api.conftest import Registry, make_client
from tests.api.test_decisions import URL, _settle, _tx
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
ADMIN = {"X-API-Key": "test-key"}
CANARY = "canary-challenger"
CUSTOMERS = [f"cus_{i:06d}" for i in range(2_000)]


@dataclass
class Replica:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str) -> Any:
        answer = httpx.get(f"{self.url}{path}", timeout=10, headers=ADMIN)
        answer.raise_for_status()
        return answer.json()

    def stop(self) -> None:
        """SIGTERM its own process group (uvicorn, its fork server, its shadow process), SIGKILL what is left."""
        for sig, wait_s in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
            if self.process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(wait_s)
        with contextlib.suppress(ProcessLookupError):  # children left behind by a leader that died first
            os.killpg(self.process.pid, signal.SIGKILL)


def _start(name: str, *, tmp_path: Path, redis_url: str, registry: Registry) -> Replica:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHADOWGATE_", "MLFLOW_", "UVICORN_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(
        {
            "SHADOWGATE_HOME": str(tmp_path / name),
            "SHADOWGATE_REDIS_URL": redis_url,
            "SHADOWGATE_MLFLOW_TRACKING_URI": registry.mlflow.tracking_uri,
            "SHADOWGATE_API_KEY": "test-key",
            "SHADOWGATE_SERVING_CUSTOMER_SALT": "test-salt",
            "SHADOWGATE_SERVING_CHALLENGER_ALIASES": json.dumps(["challenger"]),
            "SHADOWGATE_EXPERIMENTS_POLL_INTERVAL_S": "0.2",
        }
    )
    argv = [
        str(Path(sys.executable).parent / "uvicorn"), "api.main:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return Replica(name=name, url=f"http://127.0.0.1:{port}", process=process, log=log)


def _wait_ready(replica: Replica, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            raise AssertionError(f"{replica.name} exited:\n{replica.log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{replica.url}/health/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"{replica.name} not ready:\n{replica.log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def replicas(tmp_path: Path, redis_server: RedisServer, registry: Registry) -> Iterator[tuple[Replica, Replica]]:
    started: list[Replica] = []
    try:
        for name in ("replica-a", "replica-b"):
            started.append(_start(name, tmp_path=tmp_path, redis_url=redis_server.url, registry=registry))
        for replica in started:
            _wait_ready(replica)
        yield started[0], started[1]
    finally:
        for replica in started:
            replica.stop()


def _wait_for_version(replica: Replica, version: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while replica.get("/v1/experiments")["book_version"] != version:
        if time.monotonic() > deadline:
            raise AssertionError(f"{replica.name} still serves {replica.get('/v1/experiments')['book_version']}")
        time.sleep(0.05)


def _arms(replica: Replica, step: int) -> dict[str, tuple[str, str, float]]:
    """customer → (experiment that decided, arm, propensity) for every customer, from the batch endpoint."""
    arms: dict[str, tuple[str, str, float]] = {}
    for start in range(0, len(CUSTOMERS), 1_000):
        batch = [
            {**example_transaction(), "transaction_id": f"tx_{replica.name}_{step}_{n}", "customer_id": customer}
            for n, customer in enumerate(CUSTOMERS[start : start + 1_000], start=start)
        ]
        answer = httpx.post(f"{replica.url}/v1/bnpl/risk-assessment:batch", json={"transactions": batch}, timeout=60)
        assert answer.status_code == 200, answer.text
        for tx, result in zip(batch, answer.json()["results"], strict=True):
            arms[tx["customer_id"]] = (result["experiment_id"], result["arm"], result["propensity"])
    return arms


def test_two_api_processes_stay_sticky_through_a_ramp_up(
    replicas: tuple[Replica, Replica], redis_server: RedisServer
) -> None:
    a, b = replicas
    for replica in (a, b):
        listed = replica.get("/v1/experiments")
        assert (listed["book_version"], listed["store"]["source"], listed["store"]["redis_up"]) == (1, "redis", True)
        assert replica.get("/health/ready")["experiments"]["book_version"] == 1
    salt = ex.load_book().get(CANARY).salt
    buckets = {customer: unit_bucket(salt, customer) for customer in CUSTOMERS}

    steps = [("transition", {"to": "active", "reason": "shadow comparison passed"}, 0.1)]
    steps += [("share", {"treatment_share": share, "reason": f"ramp to {share}"}, share) for share in (0.3, 0.6)]
    treated_before: set[str] = set()
    for version, (action, body, share) in enumerate(steps, start=2):
        changed = httpx.post(f"{a.url}/v1/admin/experiments/{CANARY}/{action}", json=body, headers=ADMIN, timeout=10)
        assert changed.status_code == 200, changed.text
        assert changed.json()["book_version"] == version  # the replica that made the change serves it at once
        _wait_for_version(b, version)
        _wait_for_version(a, version)

        on_a, on_b = _arms(a, version), _arms(b, version)
        assert on_a == on_b  # exact agreement, customer by customer
        expected = {
            customer: (CANARY, arm_for(buckets[customer], share), share if buckets[customer] < share else 1 - share)
            for customer in CUSTOMERS
        }
        assert on_a == expected
        treated = {customer for customer, (_, arm, _) in on_a.items() if arm == "treatment"}
        assert abs(len(treated) / len(CUSTOMERS) - share) < 0.05
        assert treated_before < treated  # nobody goes back from treatment to control; the ramp adds customers
        treated_before = treated

    client = redis_server.client()
    audit = [
        {k: json.loads(v) for k, v in fields.items()} for _, fields in client.xrange("shadowgate:experiments:audit")
    ]
    assert [(e["change"], e["from_version"], e["to_version"]) for e in audit] == [
        ("seed", 0, 1),
        ("transition", 1, 2),
        ("share", 2, 3),
        ("share", 3, 4),
    ]
    assert [e["details"] for e in audit[2:]] == [
        {"from_share": 0.1, "to_share": 0.3},
        {"from_share": 0.3, "to_share": 0.6},
    ]
    assert {e["actor"] for e in audit[1:]} == {"api"}
    assert a.get("/v1/experiments")["experiments"] == b.get("/v1/experiments")["experiments"]


def test_with_redis_down_a_replica_keeps_its_book_and_refuses_changes_with_503(
    runtime_factory: Callable[..., Callable[[], Runtime]], redis_server: RedisServer
) -> None:
    with make_client(runtime_factory()) as client:
        base = f"/v1/admin/experiments/{CANARY}"
        assert (
            client.post(f"{base}/transition", json={"to": "active", "reason": "live"}, headers=ADMIN).status_code == 200
        )
        before = [client.post(URL, json=_tx(i)).json()["arm"] for i in range(300)]
        assert "treatment" in before and "control" in before

        redis_server.stop()  # SIGKILL by PID
        deadline = time.monotonic() + 10
        while client.get("/health/ready", headers=ADMIN).json()["experiments"]["redis_up"] is not False:
            assert time.monotonic() < deadline, "the outage was never noticed"
            time.sleep(0.05)
        ready = client.get("/health/ready", headers=ADMIN)
        assert ready.status_code == 200
        assert ready.json()["experiments"]["book_version"] == 2
        refused = client.post(f"{base}/share", json={"treatment_share": 0.5, "reason": "ramp"}, headers=ADMIN)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        during = [client.post(URL, json=_tx(i)) for i in range(300)]
        assert {a.status_code for a in during} == {200}
        assert [a.json()["arm"] for a in during] == before  # the same book: the same arm for every customer
        assert {a.json()["propensity"] for a in during if a.json()["arm"] == "treatment"} == {0.1}
        metrics = client.get("/metrics").text
        assert "shadowgate_experiment_book_redis_up 0.0" in metrics
        assert "shadowgate_experiment_book_version 2.0" in metrics

        redis_server.start()  # same port, AOF: the book survived
        ramped = client.post(f"{base}/share", json={"treatment_share": 0.5, "reason": "ramp"}, headers=ADMIN)
        assert ramped.status_code == 200, ramped.text
        assert ramped.json()["book_version"] == 3
        assert ramped.json()["store"]["redis_up"] is True
        _settle(client)
