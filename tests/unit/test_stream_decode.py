"""The fast (Arrow) decoder makes exactly the decisions of the strict (pydantic + pandera) one, row for row."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowgate.pipelines.stream_decode import decode, decode_strict
from shadowgate.storage.redis_streams import Entry
from tests.integration.stream_events import outcome_fields, prediction_fields

NOW = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
PREDICTION = prediction_fields(3)
OUTCOME = outcome_fields(3)

_MUTATIONS: list[tuple[str, Any]] = [
    ("drop", "decision"), ("drop", "score"), ("drop", "reason_codes"), ("drop", "assignments"), ("drop", "features"),
    ("drop", "schema_version"), ("null", "score"), ("null", "served_by"), ("null", "propensity"),
    ("set", ("schema_version", 2)), ("set", ("schema_version", 0)), ("set", ("schema_version", True)),
    ("set", ("decision", "maybe")), ("set", ("propensity", 1.5)), ("set", ("propensity", 0.3)),
    ("set", ("served_at", "2026-11-20T12:00:00")), ("set", ("served_at", "2026-11-20T14:00:00+02:00")),
    ("set", ("event_timestamp", "yesterday")), ("set", ("event_id", "other")), ("set", ("score", "0.5")),
    ("set", ("extra", 1)), ("set", ("reason_codes", ["A", None])),
    ("set", ("scores", [{"alias": "champion", "model_version": None, "score": None, "latency_us": 0.0,
                         "status": "skipped", "error": None}])),
    ("set", ("scores", [{"alias": "champion", "model_version": "1", "score": 0.1, "latency_us": -1.0,
                         "status": "ok", "error": None}])),
    ("input", ("amount", -5.0)), ("input", ("amount", "lots")), ("input", ("amount", 100)),
    ("input", ("installments", 4.0)), ("input", ("installments", 5)), ("input", ("channel", "fax")),
    ("input", ("customer_id", "cus_1")), ("input", ("event_timestamp", "2026-03-02T14:05:00")),
    ("input", ("outstanding_balance", 99_999.0)), ("feature", ("amount_log", None)), ("feature", ("amount_log", 1)),
    ("envelope", ("v", "2")), ("envelope", ("kind", "outcome")), ("envelope", ("payload", "{bad")),
    ("envelope", ("payload", '{"a":\n1}')), ("envelope", ("id", None)),
]  # fmt: skip


def _mutate(i: int, mutation: tuple[str, Any]) -> dict[str, str]:
    fields = dict(prediction_fields(i))
    fields["id"] = json.loads(fields["payload"])["event_id"]
    payload = json.loads(fields["payload"])
    how, what = mutation
    if how == "drop":
        payload.pop(what)
    elif how == "null":
        payload[what] = None
    elif how == "set":
        payload[what[0]] = what[1]
    elif how == "input":
        payload["inputs"][what[0]] = what[1]
    elif how == "feature":
        payload["features"][what[0]] = what[1]
    if how == "envelope":
        if what[1] is None:
            fields.pop(what[0])
        else:
            fields[what[0]] = what[1]
        return fields
    fields["payload"] = json.dumps(payload, separators=(",", ":"))
    return fields


def _split(decoded: Any, table: str) -> tuple[dict[str, Any], dict[str, str]]:
    rows = {r["stream_entry_id"]: r for r in decoded.table(table).to_pylist()}
    quarantined = {q["stream_entry_id"]: q["reason"].split(":")[0] for q in decoded.quarantine}
    return rows, quarantined


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.none(), st.sampled_from(_MUTATIONS)), min_size=1, max_size=12))
def test_fast_and_strict_decoders_agree(mutations: list[tuple[str, Any] | None]) -> None:
    entries = [
        Entry(f"{i + 1}-0", prediction_fields(i) if m is None else _mutate(i, m)) for i, m in enumerate(mutations)
    ]
    fast_rows, fast_quarantine = _split(decode("s", "prediction", entries, NOW), "prediction_logs")
    strict_rows, strict_quarantine = _split(decode_strict("s", "prediction", entries, NOW), "prediction_logs")
    assert fast_quarantine == strict_quarantine
    assert fast_rows == strict_rows
    assert len(fast_rows) + len(fast_quarantine) == len(entries)


def test_every_mutation_alone_agrees() -> None:
    for mutation in _MUTATIONS:
        entries = [Entry("1-0", _mutate(1, mutation)), Entry("2-0", prediction_fields(2))]
        fast = _split(decode("s", "prediction", entries, NOW), "prediction_logs")
        strict = _split(decode_strict("s", "prediction", entries, NOW), "prediction_logs")
        assert fast == strict, mutation


def test_outcomes_agree_and_load() -> None:
    entries = [Entry(f"{i}-0", outcome_fields(i)) for i in range(1, 30)] + [Entry("99-0", PREDICTION)]
    fast = _split(decode("s", "outcome", entries, NOW), "outcomes")
    strict = _split(decode_strict("s", "outcome", entries, NOW), "outcomes")
    assert fast == strict
    assert len(fast[0]) == 29 and fast[1] == {"99-0": "wrong_kind"}


def test_a_batch_whose_amounts_are_all_whole_numbers_is_not_quarantined() -> None:
    # Found by the agreement test in CI: a strict-path frame of int amounts failed the float64 dtype check.
    entries = [Entry("1-0", _mutate(1, ("input", ("amount", 100))))]
    for decoder in (decode, decode_strict):
        decoded = decoder("s", "prediction", entries, NOW)
        assert decoded.quarantine == [] and decoded.table("prediction_logs").num_rows == 1
