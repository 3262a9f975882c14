"""Outcomes are labels: recorded exactly once (API → Redis stream → uploader → warehouse) and only from the ingest key.

Everything real: the app with its shadow process and event log on a private Redis, the uploader of the
``upload_predictions`` DAG, a DuckDB warehouse file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
from fastapi.testclient import TestClient

from shadowgate.config import ApiSettings
from shadowgate.events import outcome_event_id
from shadowgate.pipelines.upload import GROUP, upload_streams
from shadowgate.serving.runtime import Runtime
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.redis_streams import StreamReader
from shadowgate.storage.warehouse import default_sql_dir
from tests.api.conftest import ADMIN, ADMIN_KEY, INGEST, INGEST_KEY, make_client
from tests.api.test_decisions import _settle
from tests.redis_server import RedisServer

OUTCOMES = "/v1/outcomes"
STREAM = "shadowgate:outcomes"
PAID = {
    "transaction_id": "tx_0000042",
    "event_type": "instalment_paid",
    "instalment_number": 2,
    "event_timestamp": "2026-04-01T10:00:00Z",
    "amount": 32.5,
}


def _post(client: TestClient, body: dict[str, Any], **headers: str) -> str:
    answer = client.post(OUTCOMES, json=body, headers={**INGEST, **headers})
    assert answer.status_code == 202, answer.text
    event_id: str = answer.json()["event_id"]
    return event_id


def _upload(server: RedisServer, warehouse: DuckDBWarehouse) -> dict[str, int]:
    reader = StreamReader(server.client(), stream=STREAM, group=GROUP, consumer="uploader")
    [stream] = upload_streams(readers=[(reader, "outcome")], warehouse=warehouse).streams
    return {"read": stream.read, "loaded": stream.loaded, "quarantined": stream.quarantined}


def _rows(warehouse: DuckDBWarehouse) -> list[dict[str, Any]]:
    return warehouse.query(
        "SELECT outcome_id, transaction_id, event_type, instalment_number, amount FROM shadowgate.outcomes "
        "ORDER BY outcome_id"
    ).to_pylist()


def test_a_resent_outcome_is_one_stream_entry_and_one_warehouse_row(
    client: TestClient, redis_server: RedisServer, tmp_path: Path
) -> None:
    expected = outcome_event_id("tx_0000042", "instalment_paid", 2)
    # A client's retry, and the same outcome under its alias: one id.
    ids = {_post(client, PAID), _post(client, PAID), _post(client, {**PAID, "event_type": "repayment"})}
    assert ids == {expected}
    _settle(client)
    redis = redis_server.client(decode_responses=True)
    entries = redis.xrange(STREAM)
    assert len(entries) == 1  # the event log skipped the two re-sends (same id)

    with DuckDBWarehouse(tmp_path / "w.duckdb", sql_dir=default_sql_dir()) as warehouse:
        assert _upload(redis_server, warehouse) == {"read": 1, "loaded": 1, "quarantined": 0}
        row = {"transaction_id": "tx_0000042", "event_type": "instalment_paid", "instalment_number": 2, "amount": 32.5}
        assert _rows(warehouse) == [{"outcome_id": expected, **row}]

        # A retry arriving after the upload (the stream is trimmed): still skipped by the event log.
        assert _post(client, PAID) == expected
        _settle(client)
        assert redis.xlen(STREAM) == 0

        # The same entry reaching the stream again (as it would once the event log's marker has expired): the
        # warehouse MERGE on outcome_id keeps the one row.
        redis.xadd(STREAM, entries[0][1])
        assert _upload(redis_server, warehouse) == {"read": 1, "loaded": 0, "quarantined": 0}
        assert _rows(warehouse) == [{"outcome_id": expected, **row}]

        # Re-sent after its marker expired, with another timestamp (a feed that restamps on resend): a new stream
        # entry, months away from the first in the partition column, and still the one row (MERGE on the id alone).
        assert redis.delete(f"shadowgate:dedup:{expected}") == 1
        assert _post(client, {**PAID, "event_timestamp": "2026-09-15T08:00:00Z"}) == expected
        _settle(client)
        assert redis.xlen(STREAM) == 1
        assert _upload(redis_server, warehouse) == {"read": 1, "loaded": 0, "quarantined": 0}
        assert _rows(warehouse) == [{"outcome_id": expected, **row}]


def test_an_idempotency_key_separates_outcomes_and_deduplicates_retries(
    client: TestClient, redis_server: RedisServer, tmp_path: Path
) -> None:
    # Two partial payments of one instalment, each retried with its own key.
    first = {**PAID, "amount": 10.0}
    second = {**PAID, "amount": 22.5}
    a = {_post(client, first, **{"Idempotency-Key": "pay-7f3a"}) for _ in range(2)}
    b = {_post(client, second, **{"Idempotency-Key": "pay-9c01"}) for _ in range(2)}
    assert a == {outcome_event_id("tx_0000042", "instalment_paid", 2, idempotency_key="pay-7f3a")}
    assert b == {outcome_event_id("tx_0000042", "instalment_paid", 2, idempotency_key="pay-9c01")}
    assert len(a | b | {outcome_event_id("tx_0000042", "instalment_paid", 2)}) == 3
    # The same key on another transaction is another outcome: keys are scoped by what they report.
    other = _post(client, {**first, "transaction_id": "tx_0000043"}, **{"Idempotency-Key": "pay-7f3a"})
    assert other not in a

    for bad in ("", "has space", "x" * 129, "{braces}", "-leading-dash"):
        answer = client.post(OUTCOMES, json=first, headers={**INGEST, "Idempotency-Key": bad})
        assert answer.status_code == 422, bad
        assert [e["loc"] for e in answer.json()["detail"]] == [["header", "Idempotency-Key"]]
    _settle(client)
    assert redis_server.client().xlen(STREAM) == 3

    with DuckDBWarehouse(tmp_path / "w.duckdb", sql_dir=default_sql_dir()) as warehouse:
        assert _upload(redis_server, warehouse) == {"read": 3, "loaded": 3, "quarantined": 0}
        amounts = {(r["transaction_id"], r["amount"]) for r in _rows(warehouse)}
        assert amounts == {("tx_0000042", 10.0), ("tx_0000042", 22.5), ("tx_0000043", 10.0)}


TRANSITION = "/v1/admin/experiments/canary-challenger/transition"
ACTIVATE = {"to": "active", "reason": "shadow comparison passed"}


def test_outcomes_need_the_ingest_key_and_nothing_else(client: TestClient, redis_server: RedisServer) -> None:
    refused = [
        {},
        {"X-Ingest-Key": "wrong"},
        {"X-Ingest-Key": ADMIN_KEY},  # the admin key is not an ingest key
        ADMIN,  # nor is the admin header
        {"X-API-Key": INGEST_KEY},
    ]
    for headers in refused:
        answer = client.post(OUTCOMES, json=PAID, headers=headers)
        assert answer.status_code == 401, headers
        assert answer.json() == {"detail": "a valid X-Ingest-Key header is required"}
        assert answer.headers["www-authenticate"] == "ApiKey"
    # The ingest key does not open the admin endpoints.
    for headers in ({"X-API-Key": INGEST_KEY}, INGEST, {**INGEST, "X-API-Key": "wrong"}):
        assert client.post(TRANSITION, json=ACTIVATE, headers=headers).status_code == 401
        assert client.post("/v1/admin/models/reload", headers=headers).status_code == 401
    # Both keys at once: each route reads its own header only.
    assert client.post(OUTCOMES, json=PAID, headers={**ADMIN, **INGEST}).status_code == 202
    assert client.post("/v1/admin/models/reload", headers={**ADMIN, **INGEST}).status_code == 200
    _settle(client)
    assert redis_server.client().xlen(STREAM) == 1  # the refused posts left nothing


def test_without_a_configured_ingest_key_outcomes_are_always_401(
    runtime_factory: Callable[..., Callable[[], Runtime]],
) -> None:
    with make_client(runtime_factory(), ingest_key=None) as keyless:
        for headers in ({}, {"X-Ingest-Key": ""}, INGEST, {"X-Ingest-Key": ADMIN_KEY}):
            assert keyless.post(OUTCOMES, json=PAID, headers=headers).status_code == 401
        assert keyless.post("/v1/admin/models/reload", headers=ADMIN).status_code == 200


def test_the_two_scopes_cannot_share_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(pydantic.ValidationError, match="ingest_key must differ from key"):
        ApiSettings(key="same-secret", ingest_key="same-secret")  # type: ignore[arg-type]
    monkeypatch.setenv("SHADOWGATE_API_KEY", "one")
    monkeypatch.setenv("SHADOWGATE_API_INGEST_KEY", "one")
    with pytest.raises(pydantic.ValidationError, match="ingest_key must differ from key"):
        ApiSettings()
    monkeypatch.setenv("SHADOWGATE_API_INGEST_KEY", "two")
    settings = ApiSettings()
    assert settings.ingest_key is not None and settings.ingest_key.get_secret_value() == "two"


@pytest.mark.parametrize(
    ("changes", "field", "error_type"),
    [
        ({"amount": False}, "amount", "float_type"),
        ({"amount": "32.5"}, "amount", "float_type"),
        ({"instalment_number": True}, "instalment_number", "int_type"),
        ({"instalment_number": 2.0}, "instalment_number", "int_type"),
        ({"event_timestamp": 1775037600}, "event_timestamp", "datetime_type"),
        ({"event_type": "Repayment"}, "event_type", "literal_error"),
    ],
)
def test_outcome_fields_are_typed_strictly(
    client: TestClient, changes: dict[str, Any], field: str, error_type: str
) -> None:
    answer = client.post(OUTCOMES, json={**PAID, **changes}, headers=INGEST)
    assert answer.status_code == 422
    assert [(e["loc"], e["type"]) for e in answer.json()["detail"]] == [(["body", field], error_type)]
    # A JSON integer is a valid amount.
    assert client.post(OUTCOMES, json={**PAID, "amount": 32}, headers=INGEST).status_code == 202


def test_a_stated_delivery_is_kept_and_a_live_producer_s_outcome_arrives_when_received(
    client: TestClient, redis_server: RedisServer, tmp_path: Path
) -> None:
    import datetime as dt

    replayed = {**PAID, "transaction_id": "tx_0000043", "delivered_at": "2026-04-01T14:05:00+02:00"}
    live = {**PAID, "transaction_id": "tx_0000044"}
    before = dt.datetime.now(dt.UTC)
    for body in (replayed, live):
        _post(client, body)
    _settle(client)
    redis = redis_server.client(decode_responses=True)
    entries = [pydantic.TypeAdapter(dict).validate_json(f["payload"]) for _, f in redis.xrange(STREAM)]
    payloads = {e["transaction_id"]: e for e in entries}
    assert payloads["tx_0000043"]["delivered_at"] == "2026-04-01T14:05:00+02:00"
    assert "delivered_at" not in payloads["tx_0000044"]  # written byte for byte as before the field existed
    with DuckDBWarehouse(tmp_path / "w.duckdb", sql_dir=default_sql_dir()) as warehouse:
        assert _upload(redis_server, warehouse) == {"read": 2, "loaded": 2, "quarantined": 0}
        params = {"as_of": dt.datetime.now(dt.UTC), "late_from": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}
        rows = warehouse.run("queries/outcome_arrivals", params).to_pylist()
    arrived = {r["transaction_id"]: r["arrived_at"] for r in rows}
    assert arrived["tx_0000043"] == dt.datetime(2026, 4, 1, 12, 5, tzinfo=dt.UTC)
    assert before <= arrived["tx_0000044"] <= dt.datetime.now(dt.UTC)


@pytest.mark.parametrize(
    ("delivered_at", "message"),
    [
        ("2999-01-01T00:00:00Z", "must not be later than the instant the API received the outcome"),
        ("2026-04-01T09:59:59Z", "must not be earlier than event_timestamp"),
        ("2026-04-01T10:00:00", "timezone"),
    ],
)
def test_a_delivery_after_the_receipt_or_before_the_outcome_was_known_is_refused(
    client: TestClient, delivered_at: str, message: str
) -> None:
    answer = client.post(OUTCOMES, json={**PAID, "delivered_at": delivered_at}, headers=INGEST)
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", "delivered_at"] and message in error["msg"]


def test_a_batch_records_each_outcome_once_as_the_single_endpoint_would(
    client: TestClient, redis_server: RedisServer, tmp_path: Path
) -> None:
    late = {**PAID, "event_type": "instalment_late", "instalment_number": 3, "event_timestamp": "2026-05-01T10:00:00Z"}
    keyed = {**PAID, "amount": 10.0, "idempotency_key": "pay-7f3a"}
    batch = {"outcomes": [PAID, late, keyed, {**PAID, "event_type": "repayment"}]}
    assert client.post(f"{OUTCOMES}:batch", json=batch).status_code == 401  # the ingest key is required
    answer = client.post(f"{OUTCOMES}:batch", json=batch, headers=INGEST)
    assert answer.status_code == 202, answer.text
    ids = answer.json()["event_ids"]
    assert answer.json()["accepted"] == 4
    assert ids == [
        outcome_event_id("tx_0000042", "instalment_paid", 2),
        outcome_event_id("tx_0000042", "instalment_late", 3),
        outcome_event_id("tx_0000042", "instalment_paid", 2, idempotency_key="pay-7f3a"),
        outcome_event_id("tx_0000042", "instalment_paid", 2),  # the alias: the same outcome as the first
    ]
    assert _post(client, PAID) == ids[0]  # the single endpoint gives the same id
    resent = client.post(f"{OUTCOMES}:batch", json=batch, headers=INGEST)  # a retry of the whole batch
    assert resent.status_code == 202 and resent.json()["event_ids"] == ids
    _settle(client)
    assert redis_server.client().xlen(STREAM) == 3  # three distinct outcomes, each once

    bad = client.post(f"{OUTCOMES}:batch", json={"outcomes": [PAID, {**late, "amount": -1}]}, headers=INGEST)
    assert bad.status_code == 422
    assert [e["loc"] for e in bad.json()["detail"]] == [["body", "outcomes", 1, "amount"]]
    assert client.post(f"{OUTCOMES}:batch", json={"outcomes": []}, headers=INGEST).status_code == 422
    too_many = client.post(f"{OUTCOMES}:batch", json={"outcomes": [PAID] * 1_001}, headers=INGEST)
    assert too_many.status_code == 413
    _settle(client)
    assert redis_server.client().xlen(STREAM) == 3  # nothing of the refused batches was recorded
