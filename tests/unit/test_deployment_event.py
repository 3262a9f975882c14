"""The deployment event: one alias move, a deterministic id, the warehouse row."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pydantic
import pytest

from shadowgate.events import DEPLOYMENT_SCHEMA_VERSION, DeploymentEvent, deployment_event_id
from shadowgate.storage.deployments import deployment_events_batch
from shadowgate.storage.warehouse import arrow_schema

AT = dt.datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=dt.UTC)
MOVE = {"model_name": "bnpl_default", "alias": "champion", "from_version": "3", "to_version": "4"}


def _event(**changes: Any) -> DeploymentEvent:
    fields: dict[str, Any] = {**MOVE, "action": "force_champion", "occurred_at": AT, **changes}
    key = {k: fields[k] for k in ("model_name", "alias", "from_version", "to_version", "action", "occurred_at")}
    return DeploymentEvent(
        event_id=deployment_event_id(**key),
        reason="INC-4711: forced until the gate runs",
        actor="bob@ops",
        evidence={"run_id": "abc", "valid_metrics": {"auc": 0.86}},
        **fields,
    )


def test_the_id_is_the_move() -> None:
    assert _event().event_id == _event().event_id  # the same recorded move: the same id
    assert len(_event().event_id) == 32
    others = [
        _event(to_version="5"),
        _event(from_version=None),
        _event(alias="challenger", action="assign"),
        _event(action="promote"),
        _event(occurred_at=AT + dt.timedelta(microseconds=1)),  # the same versions moved again later
    ]
    assert len({e.event_id for e in others} | {_event().event_id}) == 6
    # The instant is compared in UTC: the same instant in another zone is the same move.
    elsewhere = AT.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert _event(occurred_at=elsewhere).event_id == _event().event_id
    assert _event(occurred_at=elsewhere).occurred_at.utcoffset() == dt.timedelta(0)


def test_the_event_is_frozen_strict_and_versioned() -> None:
    event = _event()
    assert event.schema_version == DEPLOYMENT_SCHEMA_VERSION == 2
    # A move recorded by the first version (its actions, no removed alias) still reads.
    first = DeploymentEvent.model_validate({**event.model_dump(), "schema_version": 1})
    assert first.action == "force_champion"
    with pytest.raises(pydantic.ValidationError):
        event.reason = "changed"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="extra"):
        DeploymentEvent.model_validate({**event.model_dump(), "ticket": "INC-1"})
    with pytest.raises(pydantic.ValidationError):
        DeploymentEvent.model_validate({**event.model_dump(), "schema_version": DEPLOYMENT_SCHEMA_VERSION + 1})
    with pytest.raises(pydantic.ValidationError):
        _event(action="rollback_by_hand")
    removed = _event(action="retire", alias="challenger", to_version=None)
    assert (removed.action, removed.to_version) == ("retire", None)
    with pytest.raises(pydantic.ValidationError):
        DeploymentEvent.model_validate({**event.model_dump(), "occurred_at": "2026-11-29T10:00:00"})  # naive
    assert DeploymentEvent.model_validate_json(event.model_dump_json()) == event


def test_the_row_is_the_warehouse_batch() -> None:
    event = _event()
    batch = deployment_events_batch([event, event, _event(to_version="5")])
    assert batch.schema == arrow_schema("deployment_events")
    assert batch.num_rows == 2  # each event id once
    row = batch.to_pylist()[0]
    assert {k: row[k] for k in ("event_id", "action", "alias", "from_version", "to_version", "actor")} == {
        "event_id": event.event_id,
        "action": "force_champion",
        "alias": "champion",
        "from_version": "3",
        "to_version": "4",
        "actor": "bob@ops",
    }
    assert json.loads(row["evidence"]) == {"run_id": "abc", "valid_metrics": {"auc": 0.86}}
    assert row["occurred_at"] == AT


def test_bigquery_stages_the_json_evidence_as_text() -> None:
    from google.cloud import bigquery

    from shadowgate.storage.bigquery import staging_schema

    target = [
        bigquery.SchemaField("event_id", "STRING", mode="REQUIRED"),
        bigquery.SchemaField("occurred_at", "TIMESTAMP", mode="REQUIRED"),
        bigquery.SchemaField("evidence", "JSON", mode="NULLABLE"),
    ]
    staged = staging_schema(target)
    assert [(f.name, f.field_type, f.mode) for f in staged] == [
        ("event_id", "STRING", "REQUIRED"),
        ("occurred_at", "TIMESTAMP", "REQUIRED"),
        ("evidence", "STRING", "NULLABLE"),
    ]
