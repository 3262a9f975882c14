"""Health, metrics, served models, shadow comparison, admin key, experiments and canary serving."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from shadowgate.serving.runtime import Runtime
from tests.api.conftest import CHALLENGER_B, Registry, make_client
from tests.api.test_decisions import URL, _settle, _tx

ADMIN = {"X-API-Key": "test-key"}


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, value = line.rsplit(" ", 1)
        sample = head.split("{", 1)
        if sample[0] != name:
            continue
        found = dict(p.split("=", 1) for p in sample[1].rstrip("}").split(",")) if len(sample) > 1 else {}
        if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
            return float(value)
    raise AssertionError(f"no sample {name}{labels}")


def test_health_models_and_metrics(client: TestClient, registry: Registry) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}
    # Without the admin key: the status only (no versions, no error texts, no pids).
    anonymous = client.get("/health/ready")
    assert anonymous.status_code == 200
    assert anonymous.json() == {"status": "ready", "details": "send the admin key (X-API-Key)"}
    assert client.get("/health/ready", headers={"X-API-Key": "wrong"}).json().keys() == {"status", "details"}
    ready = client.get("/health/ready", headers=ADMIN)
    assert ready.status_code == 200
    assert ready.json()["models"] == registry.versions
    # Redis shows up once the shadow process (started with the app) has reached it: within a second or so.
    deadline = time.monotonic() + 15
    while not (up := client.get("/health/ready", headers=ADMIN).json()["redis"]["up"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert up is True
    models = client.get("/v1/models").json()
    assert {a: m["version"] for a, m in models["aliases"].items()} == registry.versions
    assert models["aliases"]["champion"]["family"] == "logistic"
    assert models["aliases"]["challenger"]["family"] == "tree_ensemble"

    decisions = [client.post(URL, json=_tx(i)).json()["decision"] for i in range(50)]
    _settle(client)
    text = client.get("/metrics").text
    for decision in set(decisions):
        assert _metric(text, "shadowgate_decisions_total", decision=decision, alias="champion") == decisions.count(
            decision
        )
    assert _metric(text, "shadowgate_model_latency_seconds_count", alias="champion", role="decider") == 50
    assert _metric(text, "shadowgate_model_latency_seconds_count", alias=CHALLENGER_B, role="shadow") >= 1
    assert _metric(text, "shadowgate_events_written_total") == 50
    assert _metric(text, "shadowgate_events_dead_lettered_total") == 0
    assert _metric(text, "shadowgate_journal_pending_bytes") == 0
    agree = _metric(text, "shadowgate_shadow_agreement_total", alias="challenger", agree="true")
    disagree = (
        _metric(text, "shadowgate_shadow_agreement_total", alias="challenger", agree="false")
        if ('alias="challenger",agree="false"' in text)
        else 0.0
    )
    assert agree + disagree == 50

    comparison = client.get("/v1/shadow/comparison").json()["window"]
    assert set(comparison) == {"challenger", CHALLENGER_B}
    assert comparison["challenger"]["requests"] == 50
    assert comparison["challenger"]["agreement"] == agree / 50


TRANSITION = "/v1/admin/experiments/canary-challenger/transition"
ACTIVATE = {"to": "active", "reason": "shadow comparison passed"}


def test_admin_needs_the_key(client: TestClient) -> None:
    assert client.post(TRANSITION, json=ACTIVATE).status_code == 401
    assert client.post(TRANSITION, json=ACTIVATE, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/v1/admin/models/reload").status_code == 401
    assert client.get("/v1/experiments").json()["active"] == ["shadow-challenger"]
    reload = client.post("/v1/admin/models/reload", headers=ADMIN)
    assert reload.status_code == 200
    assert reload.json()["changed"] is False


def test_without_a_configured_key_admin_is_always_401(runtime_factory: Callable[..., Callable[[], Runtime]]) -> None:
    with make_client(runtime_factory(), key=None) as keyless:
        assert keyless.post(TRANSITION, json=ACTIVATE, headers={"X-API-Key": ""}).status_code == 401
        assert keyless.post(TRANSITION, json=ACTIVATE, headers={"X-API-Key": "test-key"}).status_code == 401
        assert keyless.get("/v1/experiments").json()["active"] == ["shadow-challenger"]


def test_experiment_lifecycle_through_the_api(client: TestClient) -> None:
    base = "/v1/admin/experiments"
    assert (
        client.post(f"{base}/nope/transition", json={"to": "active", "reason": "x" * 5}, headers=ADMIN).status_code
        == 404
    )
    assert (
        client.post(
            f"{base}/canary-challenger/transition", json={"to": "completed", "reason": "skip draft"}, headers=ADMIN
        )
    ).status_code == 409
    assert (
        client.post(
            f"{base}/canary-challenger/share", json={"treatment_share": 1.5, "reason": "too much"}, headers=ADMIN
        ).status_code
        == 422
    )
    moved = client.post(f"{base}/canary-challenger/transition", json={"to": "active", "reason": "live"}, headers=ADMIN)
    assert moved.status_code == 200, moved.text
    assert moved.json()["experiment"]["version"] == 2
    assert sorted(moved.json()["active"]) == ["canary-challenger", "shadow-challenger"]


def _served(client: TestClient, n: int) -> list[dict[str, Any]]:
    return [client.post(URL, json=_tx(i)).json() for i in range(n)]


def test_canary_serves_the_treatment_share_stickily(client: TestClient, registry: Registry) -> None:
    base = "/v1/admin/experiments/canary-challenger"
    assert client.post(f"{base}/transition", json={"to": "active", "reason": "live"}, headers=ADMIN).status_code == 200
    first = _served(client, 400)  # 400 distinct customers
    treated = [a for a in first if a["arm"] == "treatment"]
    assert all(a["experiment_id"] == "canary-challenger" for a in first)
    assert all(a["model"] == {"alias": "challenger", "version": registry.versions["challenger"]} for a in treated)
    assert all(a["propensity"] == 0.1 for a in treated)
    assert all(a["propensity"] == 0.9 and a["model"]["alias"] == "champion" for a in first if a["arm"] == "control")
    assert 0.1 - 0.06 < len(treated) / 400 < 0.1 + 0.06

    # Ramp up: every customer treated at 10 % stays treated at 50 %.
    ramp = client.post(f"{base}/share", json={"treatment_share": 0.5, "reason": "ramp"}, headers=ADMIN)
    assert ramp.status_code == 200
    second = _served(client, 400)
    was = {a["transaction_id"] for a in treated}
    now = {a["transaction_id"] for a in second if a["arm"] == "treatment"}
    assert was <= now
    assert len(now) > len(was)
    assert all(a["propensity"] == 0.5 for a in second)
    _settle(client)


def test_a_canary_arm_without_its_model_is_served_by_the_champion_and_flagged(
    runtime_factory: Callable[..., Callable[[], Runtime]], registry: Registry
) -> None:
    # Only challenger-b is loaded: the canary's treatment alias (challenger) is not.
    with make_client(runtime_factory(challenger_aliases=(CHALLENGER_B,))) as client:
        base = "/v1/admin/experiments/canary-challenger"
        assert (
            client.post(f"{base}/transition", json={"to": "active", "reason": "live"}, headers=ADMIN).status_code == 200
        )
        assert (
            client.post(f"{base}/share", json={"treatment_share": 1.0, "reason": "all in"}, headers=ADMIN).status_code
            == 200
        )
        answers = _served(client, 20)
        assert {a["arm"] for a in answers} == {"treatment"}
        assert {a["model"]["alias"] for a in answers} == {"champion"}
        assert all(a["reason_codes"][-1] == "ARM_MODEL_UNAVAILABLE" for a in answers)
        _settle(client)
