"""The fast (Arrow) decoder makes exactly the decisions of the strict (pydantic + pandera) one, row for row."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowgate.events import SCHEMA_VERSION
from shadowgate.features import FEATURE_NAMES, FEATURE_SET
from shadowgate.pipelines.stream_decode import decode, decode_strict
from shadowgate.storage.redis_streams import Entry
from tests.integration.stream_events import (
    OLDER_ONLY,
    OLDER_SET,
    older_features,
    older_prediction_fields,
    older_set_known,
    outcome_fields,
    prediction_fields,
)

NOW = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
PREDICTION = prediction_fields(3)
OUTCOME = outcome_fields(3)

_MUTATIONS: list[tuple[str, Any]] = [
    ("drop", "decision"), ("drop", "score"), ("drop", "reason_codes"), ("drop", "assignments"), ("drop", "features"),
    ("drop", "schema_version"), ("null", "score"), ("null", "served_by"), ("null", "propensity"),
    ("set", ("schema_version", SCHEMA_VERSION + 1)), ("set", ("schema_version", 0)),
    ("set", ("schema_version", True)), ("set", ("schema_version", 1)),
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
    ("feature", ("device=other", "0.5")), ("set", ("feature_set", "fs-000000000000")), ("set", ("feature_set", None)),
    ("drop", "feature_set"), ("truncate_features", 37), ("truncate_features", 39),
    ("named", 1), ("named", 2), ("named_missing", "hour_cos"), ("named_extra", "new_feature"),
    ("envelope", ("v", "2")), ("envelope", ("kind", "outcome")), ("envelope", ("payload", "{bad")),
    ("envelope", ("payload", '{"a":\n1}')), ("envelope", ("id", None)),
    # Each of these made the two paths disagree before the fast checks were derived from the models.
    ("null", "reason_codes"), ("null", "assignments"), ("score_key", "score"), ("score_key", "model_version"),
    ("score_key", "status"), ("set", ("risk_level", 5)),
    # Another known feature set (registered by the tests that use these), in each form, and mislabelled ones.
    ("older", 2), ("older", 1), ("older_named", None), ("older_named", OLDER_SET), ("older_named", FEATURE_SET),
    ("older_truncate", 1), ("set", ("feature_set", OLDER_SET)), ("named_as", OLDER_SET),
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
        payload["features"][FEATURE_NAMES.index(what[0])] = what[1]
    elif how == "truncate_features":
        payload["features"] = (payload["features"] * 2)[:what]
    elif how == "score_key":
        payload["scores"][1].pop(what)
    elif how.startswith("older"):
        payload = json.loads(older_prediction_fields(i)["payload"])
        if how == "older":
            payload["schema_version"] = what
        elif how == "older_named":
            payload["features"] = older_features(i)
            payload["feature_set"] = what
        else:
            payload["features"] = payload["features"][:-what]
    elif how == "named_as":
        payload["features"] = dict(zip(FEATURE_NAMES, payload["features"], strict=True))
        payload["feature_set"] = what
    elif how.startswith("named"):
        # The named form: what version 1 producers wrote (and version 2 still reads).
        payload["features"] = dict(zip(FEATURE_NAMES, payload["features"], strict=True))
        payload.pop("feature_set")
        if how == "named":
            payload["schema_version"] = what
        elif how == "named_missing":
            payload["features"].pop(what)
        else:
            payload["features"][what] = 1.0
    if how == "envelope":
        if what[1] is None:
            fields.pop(what[0])
        else:
            fields[what[0]] = what[1]
        return fields
    fields["payload"] = json.dumps(payload, separators=(",", ":"))
    return fields


def test_the_service_writes_features_as_an_array_and_both_forms_load_the_same_row() -> None:
    array = prediction_fields(3)
    named = _mutate(3, ("named", 1))
    assert isinstance(json.loads(array["payload"])["features"], list)
    assert len(array["payload"]) < 0.75 * len(named["payload"])
    for decoder in (decode, decode_strict):
        rows = [decoder("s", "prediction", [Entry("1-0", f)], NOW).table("prediction_logs").to_pylist() for f in
                (array, named)]  # fmt: skip
        assert len(rows[0]) == len(rows[1]) == 1
        a, b = rows[0][0], rows[1][0]
        assert a["features"] == b["features"] and a["features"]["amount_log"] == pytest.approx(4.8751209844)
        assert (a["schema_version"], b["schema_version"]) == (SCHEMA_VERSION, 1)


def _split(decoded: Any, table: str) -> tuple[dict[str, Any], dict[str, str]]:
    rows = {r["stream_entry_id"]: r for r in decoded.table(table).to_pylist()}
    quarantined = {q["stream_entry_id"]: q["reason"].split(":")[0] for q in decoded.quarantine}
    return rows, quarantined


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.none(), st.sampled_from(_MUTATIONS)), min_size=1, max_size=12))
def test_fast_and_strict_decoders_agree(mutations: list[tuple[str, Any] | None]) -> None:
    with older_set_known():
        entries = [
            Entry(f"{i + 1}-0", prediction_fields(i) if m is None else _mutate(i, m)) for i, m in enumerate(mutations)
        ]
        fast_rows, fast_quarantine = _split(decode("s", "prediction", entries, NOW), "prediction_logs")
        strict_rows, strict_quarantine = _split(decode_strict("s", "prediction", entries, NOW), "prediction_logs")
    assert fast_quarantine == strict_quarantine
    assert fast_rows == strict_rows
    assert len(fast_rows) + len(fast_quarantine) == len(entries)


def test_every_mutation_alone_agrees() -> None:
    with older_set_known():
        for mutation in _MUTATIONS:
            entries = [Entry("1-0", _mutate(1, mutation)), Entry("2-0", prediction_fields(2))]
            fast = _split(decode("s", "prediction", entries, NOW), "prediction_logs")
            strict = _split(decode_strict("s", "prediction", entries, NOW), "prediction_logs")
            assert fast == strict, mutation


_OUTCOME_MUTATIONS: list[tuple[str, Any]] = [
    ("drop", "instalment_number"), ("drop", "amount"), ("drop", "event_type"), ("drop", "schema_version"),
    ("null", "instalment_number"), ("null", "amount"), ("null", "transaction_id"),
    ("set", ("event_type", "repayment")), ("set", ("event_type", "missed_instalment")),
    ("set", ("event_type", "default")), ("set", ("event_type", "write_off")), ("set", ("instalment_number", 0)),
    ("set", ("instalment_number", 2.0)), ("set", ("instalment_number", "2")), ("set", ("amount", -0.01)),
    ("set", ("amount", 0)), ("set", ("event_timestamp", "2026-12-20T12:00:00")),
    ("set", ("received_at", "2026-12-20T12:00:00-05:00")), ("set", ("schema_version", SCHEMA_VERSION + 1)),
    ("set", ("event_id", "other")), ("set", ("extra", 1)),
]  # fmt: skip


def _mutate_outcome(i: int, mutation: tuple[str, Any]) -> dict[str, str]:
    fields = outcome_fields(i)
    payload = json.loads(fields["payload"])
    how, what = mutation
    if how == "drop":
        payload.pop(what)
    elif how == "null":
        payload[what] = None
    else:
        payload[what[0]] = what[1]
    return {**fields, "payload": json.dumps(payload, separators=(",", ":"))}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.none(), st.sampled_from(_OUTCOME_MUTATIONS)), min_size=1, max_size=12))
def test_fast_and_strict_decoders_agree_on_outcomes(mutations: list[tuple[str, Any] | None]) -> None:
    # i from 1: outcome_fields(10·k) is a default (no instalment number), the others instalment events.
    entries = [
        Entry(f"{i}-0", outcome_fields(i) if m is None else _mutate_outcome(i, m))
        for i, m in enumerate(mutations, start=1)
    ]
    fast = _split(decode("s", "outcome", entries, NOW), "outcomes")
    strict = _split(decode_strict("s", "outcome", entries, NOW), "outcomes")
    assert fast == strict
    assert len(fast[0]) + len(fast[1]) == len(entries)


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


def test_what_becomes_of_each_features_form() -> None:
    expected = {
        ("named", 1): None,  # loaded: a version 1 event
        ("named", 2): None,
        ("set", ("schema_version", 1)): "invalid_field",  # an array needs version 2
        ("set", ("feature_set", "fs-000000000000")): "invalid_field",  # unknown set: never guessed
        ("set", ("feature_set", None)): "invalid_field",
        ("drop", "feature_set"): "invalid_field",
        ("truncate_features", 37): "invalid_field",
        ("truncate_features", 39): "invalid_field",
        ("feature", ("amount_log", None)): "invalid_field",
        ("named_missing", "hour_cos"): "invalid_inputs",
        ("named_extra", "new_feature"): "invalid_inputs",
        # A known set other than the current one loads, in either form; a mislabelled one does not.
        ("older", 2): None,
        ("older", 1): "invalid_field",  # an array needs version 2
        ("older_named", None): None,  # named: its names say which set it is
        ("older_named", OLDER_SET): None,
        ("older_named", FEATURE_SET): "invalid_inputs",  # names of one set, labelled as another
        ("named_as", OLDER_SET): "invalid_inputs",
        ("set", ("feature_set", OLDER_SET)): "invalid_field",  # the current set's values, the older set's length
        ("older_truncate", 1): "invalid_field",
    }
    with older_set_known():
        for mutation, reason in expected.items():
            entries = [Entry("1-0", _mutate(1, mutation))]
            for decoder in (decode, decode_strict):
                decoded = decoder("s", "prediction", entries, NOW)
                rows, quarantined = _split(decoded, "prediction_logs")
                assert (quarantined.get("1-0"), len(rows)) == (reason, 0 if reason else 1), (mutation, decoder)
                if rows:
                    expected_set = OLDER_SET if mutation[0].startswith("older") else FEATURE_SET
                    assert rows["1-0"]["feature_set"] == expected_set, mutation
    # Without the older set registered, its events are an unknown set's: quarantined, never guessed.
    with older_set_known():
        unknown = {"invalid_field": _mutate(1, ("older", 2)), "invalid_inputs": _mutate(1, ("older_named", None))}
    for reason, fields in unknown.items():
        for decoder in (decode, decode_strict):
            assert _split(decoder("s", "prediction", [Entry("1-0", fields)], NOW), "prediction_logs")[1] == {
                "1-0": reason
            }


def test_an_event_of_another_known_set_fills_its_own_features_and_leaves_the_others_null() -> None:
    with older_set_known():
        entries = [Entry("1-0", older_prediction_fields(1)), Entry("2-0", prediction_fields(2))]
        for decoder in (decode, decode_strict):
            rows, quarantined = _split(decoder("s", "prediction", entries, NOW), "prediction_logs")
            assert quarantined == {}
            older, current = rows["1-0"]["features"], rows["2-0"]["features"]
            assert older["legacy_bureau_score"] == 1.25 and older["channel__fax"] == 1.5
            assert older["amount_log"] == pytest.approx(4.8751209844)  # the shared names hold their own values
            assert older["hour_sin"] is None and older["hour_cos"] is None  # not in the older set
            assert current["legacy_bureau_score"] is None and current["hour_sin"] is not None
            assert older["legacy_flag"] == 1.75
            assert [name for name, v in older.items() if v is not None][-len(OLDER_ONLY) :] == [
                "legacy_bureau_score",
                "channel__fax",
                "legacy_flag",
            ]
