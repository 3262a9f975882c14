"""The decision endpoints end to end: real MLflow store, real Redis, the real app (TestClient)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowgate.contract import TRANSACTION_FIELDS, example_transaction
from shadowgate.events import from_stream_fields
from shadowgate.features import FEATURE_NAMES, features_one
from tests.api.conftest import CHALLENGER_B, INGEST, Registry
from tests.redis_server import RedisServer

URL = "/v1/bnpl/risk-assessment"


def _tx(i: int = 0, **changes: Any) -> dict[str, Any]:
    return {
        **example_transaction(),
        "transaction_id": f"tx_{i:07d}",
        "customer_id": f"cus_{i % 997:06d}",
        **changes,
    }


def _stream(server: RedisServer, name: str) -> list[dict[str, Any]]:
    """Every event in a stream, each decoded and validated against its schema (PredictionEvent / OutcomeEvent)."""
    client = server.client(decode_responses=True)
    return [from_stream_fields(fields).model_dump(mode="json") for _, fields in client.xrange(name)]


def _settle(client: TestClient) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.shadow.flush(10.0)


def test_single_assessment_is_the_champions_score_and_policy(client: TestClient, registry: Registry) -> None:
    import mlflow

    tx = _tx(1)
    answer = client.post(URL, json=tx)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == {"alias": "champion", "version": registry.versions["champion"]}
    assert body["policy"]["name"] == "conservative"
    assert body["fallback"] is False
    assert body["decision"] in {"approve", "deny", "manual_review"}
    assert len(body["request_id"]) == 32

    mlflow.set_tracking_uri(registry.mlflow.tracking_uri)
    model = mlflow.sklearn.load_model(f"models:/bnpl_default/{registry.versions['champion']}")
    parsed = {**tx, "event_timestamp": dt.datetime.fromisoformat(tx["event_timestamp"].replace("Z", "+00:00"))}
    row = pd.DataFrame([features_one(parsed)], columns=list(FEATURE_NAMES))
    expected = float(model.predict_proba(row)[0, 1])
    assert body["risk_score"] == pytest.approx(expected, abs=1e-9)


def test_every_request_is_logged_once_with_every_models_score(
    client: TestClient, registry: Registry, redis_server: RedisServer
) -> None:
    # 200 customers; transaction 998 is a second purchase by transaction 1's customer (998 % 997 == 1).
    ids = [client.post(URL, json=_tx(i)).json()["request_id"] for i in [*range(200), 998]]
    _settle(client)
    events = _stream(redis_server, "shadowgate:predictions")
    assert [e["event_id"] for e in events] == ids
    for event in events:
        by_alias = {s["alias"]: s for s in event["scores"]}
        assert set(by_alias) == {"champion", "challenger", CHALLENGER_B}
        assert all(s["status"] == "ok" and 0.0 <= s["score"] <= 1.0 for s in by_alias.values())
        assert {a: s["model_version"] for a, s in by_alias.items()} == registry.versions
        assert event["score"] == by_alias["champion"]["score"]
        assert "customer_id" not in event["inputs"]
        assert not event["customer_id_hash"].startswith("cus_")
    # The same customer hashes the same way; different customers differently.
    hashes = {e["inputs"]["transaction_id"]: e["customer_id_hash"] for e in events}
    assert hashes["tx_0000001"] == hashes["tx_0000998"]
    assert len({e["customer_id_hash"] for e in events}) == 200


@pytest.mark.parametrize(
    ("change", "field", "error_type"),
    [
        ({"amount": -5}, "amount", "greater_than_equal"),
        ({"amount": "lots"}, "amount", "float_type"),
        # Numbers are JSON numbers: no booleans (pydantic would read them as 1 / 0), no numeric strings.
        ({"amount_last_7d": False}, "amount_last_7d", "float_type"),
        ({"amount": "129.99"}, "amount", "float_type"),
        ({"prior_defaults": True}, "prior_defaults", "int_type"),
        ({"customer_age": 34.5}, "customer_age", "int_type"),
        ({"is_vip": "yes"}, "is_vip", "bool_type"),
        # Timestamps are RFC 3339 text: no Unix times, as numbers or as strings.
        ({"event_timestamp": 1772460300}, "event_timestamp", "datetime_type"),
        ({"event_timestamp": "1772460300"}, "event_timestamp", "datetime_type"),
        ({"installments": 5}, "installments", "literal_error"),
        ({"channel": "fax"}, "channel", "literal_error"),
        ({"event_timestamp": "2026-03-02T14:05:00"}, "event_timestamp", "timezone_aware"),
        ({"customer_age": 17}, "customer_age", "greater_than_equal"),
        ({"surprise": 1}, "surprise", "extra_forbidden"),
        ({"merchant_category": "Bad Category!"}, "merchant_category", "string_pattern_mismatch"),
        ({"regulatory_flags": "sanctions_hit"}, "regulatory_flags", "list_type"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(
    client: TestClient, change: dict[str, Any], field: str, error_type: str
) -> None:
    answer = client.post(URL, json=_tx(3, **change))
    assert answer.status_code == 422
    errors = answer.json()["detail"]
    assert [(e["loc"], e["type"]) for e in errors] == [(["body", field], error_type)]


def test_missing_fields_are_each_named(client: TestClient) -> None:
    answer = client.post(URL, json={"amount": 10.0})
    assert answer.status_code == 422
    missing = {e["loc"][-1] for e in answer.json()["detail"] if e["type"] == "missing"}
    assert missing == {f.name for f in TRANSACTION_FIELDS} - {"amount"}


def test_cross_field_rule_and_garbage_bodies_are_422(client: TestClient) -> None:
    answer = client.post(URL, json=_tx(4, prior_purchases=1, prior_defaults=2))
    assert answer.status_code == 422
    assert "prior_defaults" in answer.json()["detail"][0]["msg"]
    for body in (b"{not json", b"[]", b"null", b'"text"'):
        assert client.post(URL, content=body, headers={"content-type": "application/json"}).status_code == 422


def test_batch_answers_each_transaction_and_limits_size(client: TestClient, redis_server: RedisServer) -> None:
    batch = [_tx(100 + i) for i in range(5)]
    answer = client.post(f"{URL}:batch", json={"transactions": batch})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["transaction_id"] for r in results] == [t["transaction_id"] for t in batch]
    single = client.post(URL, json=batch[2]).json()
    assert results[2]["risk_score"] == single["risk_score"]

    too_big = client.post(f"{URL}:batch", json={"transactions": [_tx(i) for i in range(1001)]})
    assert too_big.status_code == 413
    assert client.post(f"{URL}:batch", json={"transactions": []}).status_code == 422
    assert (
        client.post(f"{URL}:batch", content=b"{oops", headers={"content-type": "application/json"}).status_code == 422
    )
    bad_item = client.post(f"{URL}:batch", json={"transactions": [_tx(1), _tx(2, amount=-1)]})
    assert bad_item.status_code == 422
    assert [e["loc"] for e in bad_item.json()["detail"]] == [["body", "transactions", 1, "amount"]]
    _settle(client)
    assert len(_stream(redis_server, "shadowgate:predictions")) == 6


def test_outcomes_are_validated_and_streamed(client: TestClient, redis_server: RedisServer) -> None:
    ok = client.post(
        "/v1/outcomes",
        json={"transaction_id": "tx_0000001", "event_type": "missed_instalment", "instalment_number": 2,
              "event_timestamp": "2026-04-01T10:00:00Z"},
        headers=INGEST,
    )  # fmt: skip
    assert ok.status_code == 202, ok.text
    assert ok.json()["event_type"] == "instalment_late"
    default = client.post(
        "/v1/outcomes",
        json={"transaction_id": "tx_0000001", "event_type": "default", "event_timestamp": "2026-05-01T10:00:00Z"},
        headers=INGEST,
    )
    assert default.status_code == 202
    for bad in (
        {"transaction_id": "tx_1", "event_type": "repayment", "event_timestamp": "2026-04-01T10:00:00Z"},
        {
            "transaction_id": "tx_1",
            "event_type": "refund",
            "instalment_number": 1,
            "event_timestamp": "2026-04-01T10:00:00Z",
        },
        {"transaction_id": "tx_1", "event_type": "default", "event_timestamp": "2026-04-01T10:00:00"},
    ):
        assert client.post("/v1/outcomes", json=bad, headers=INGEST).status_code == 422
    _settle(client)
    events = _stream(redis_server, "shadowgate:outcomes")
    assert [e["event_type"] for e in events] == ["instalment_late", "default"]


def test_event_timestamps_are_the_events_own_time_whatever_the_clock_says(
    client: TestClient, redis_server: RedisServer
) -> None:
    """A product decision (issue 10, replay): ``event_timestamp`` is when the purchase or the outcome happened, not
    when the request arrives, and is not checked against the clock, so that history can be sent through the API
    (`shadowgate replay`). The service's own clock is recorded beside it (``served_at`` / ``received_at``)."""
    instants = ["2019-06-03T08:15:00Z", "2026-01-05T23:59:59+01:00", "2031-12-31T12:00:00Z"]
    for i, instant in enumerate(instants):
        assert client.post(URL, json=_tx(300 + i, event_timestamp=instant)).status_code == 200
        outcome = {"transaction_id": f"tx_{300 + i:07d}", "event_type": "default", "event_timestamp": instant}
        assert client.post("/v1/outcomes", json=outcome, headers=INGEST).status_code == 202
    _settle(client)
    now = dt.datetime.now(dt.UTC)
    sent = [dt.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in instants]
    predictions = _stream(redis_server, "shadowgate:predictions")
    outcomes = _stream(redis_server, "shadowgate:outcomes")
    assert [dt.datetime.fromisoformat(e["event_timestamp"]) for e in predictions] == sent
    assert [dt.datetime.fromisoformat(e["event_timestamp"]) for e in outcomes] == sent
    for stamp in [e["served_at"] for e in predictions] + [e["received_at"] for e in outcomes]:
        assert abs((dt.datetime.fromisoformat(stamp) - now).total_seconds()) < 60


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from([f.name for f in TRANSACTION_FIELDS] + ["is_vip", "x"]), _JSON))
def test_nothing_a_client_sends_is_a_5xx(client: TestClient, changes: dict[str, Any]) -> None:
    answer = client.post(URL, json=_tx(5, **changes))
    assert answer.status_code in {200, 422}, answer.text
    batch = client.post(f"{URL}:batch", json={"transactions": [_tx(6, **changes)], **changes})
    assert batch.status_code in {200, 422}, batch.text
    outcome = client.post("/v1/outcomes", json=changes, headers=INGEST)
    assert outcome.status_code == 422


def test_openapi_and_swagger_docs(client: TestClient) -> None:
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert {URL, f"{URL}:batch", "/v1/outcomes", "/health/live", "/health/ready", "/metrics", "/v1/models"} <= set(
        paths
    )
    body = paths[f"{URL}:batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/BatchAssessmentRequest"}
    assert "transactions" in spec.json()["components"]["schemas"]["BatchAssessmentRequest"]["properties"]
    assert client.get("/docs").status_code == 200


def test_validator_errors_name_the_field_and_keep_their_message(client: TestClient) -> None:
    outcome = client.post(
        "/v1/outcomes",
        json={"transaction_id": "tx_1", "event_type": "repayment", "event_timestamp": "2026-04-01T10:00:00Z"},
        headers=INGEST,
    )
    assert outcome.status_code == 422
    [error] = outcome.json()["detail"]
    assert error["loc"] == ["body", "instalment_number"]
    assert error["ctx"]["error"] == "required for repayment and missed-instalment events"
    # The contract's cross-field rule, on the batch route (FastAPI's own validation) and the single one (raw bytes).
    for path, body in (
        (f"{URL}:batch", {"transactions": [_tx(1, prior_purchases=1, prior_defaults=2)]}),
        (URL, _tx(1, prior_purchases=1, prior_defaults=2)),
    ):
        answer = client.post(path, json=body)
        assert answer.status_code == 422
        [error] = answer.json()["detail"]
        assert "prior_defaults" in error["ctx"]["error"], error
