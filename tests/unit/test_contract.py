"""The contract's derived views (request model, pandera schema, warehouse columns, drift columns) agree."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pandas as pd
import pandera.errors
import pydantic
import pytest
from hypothesis import given, settings

from shadowgate import contract
from shadowgate.contract import TRANSACTION_FIELDS, Kind, Role
from tests.strategies import transactions


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True)
    return df


def test_every_view_has_the_contract_fields_in_order() -> None:
    names = [f.name for f in TRANSACTION_FIELDS]
    assert list(contract.request_model().model_fields) == names
    assert list(contract.pandera_schema().columns) == names
    assert [c.name for c in contract.warehouse_columns()] == names
    assert len(set(names)) == len(names) == 19


def test_warehouse_types_follow_kinds() -> None:
    expected = {Kind.STRING: "STRING", Kind.INTEGER: "INT64", Kind.FLOAT: "FLOAT64", Kind.TIMESTAMP: "TIMESTAMP"}
    for field, column in zip(TRANSACTION_FIELDS, contract.warehouse_columns(), strict=True):
        assert column.type == expected[field.kind]
        assert column.mode == "REQUIRED"


def test_drift_columns_are_exactly_features_and_context() -> None:
    drift = contract.drift_columns()
    watched = {f.name for f in TRANSACTION_FIELDS if f.role in (Role.FEATURE, Role.CONTEXT)}
    assert set(drift.all) == watched
    assert not set(drift.numerical) & set(drift.categorical)
    assert {"transaction_id", "customer_id", "merchant_id", "event_timestamp"}.isdisjoint(drift.all)
    assert set(drift.categorical) == {"currency", "installments", "merchant_category", "channel", "device"}


def test_example_is_valid_in_both_views() -> None:
    example = contract.example_transaction()
    contract.request_model().model_validate(example)
    contract.pandera_schema().validate(_frame([example]))


@settings(max_examples=200, deadline=None)
@given(tx=transactions())
def test_valid_transactions_pass_both_views(tx: dict[str, Any]) -> None:
    contract.request_model().model_validate(tx)
    contract.pandera_schema().validate(_frame([tx]))


def _violations() -> list[tuple[str, Any]]:
    """One out-of-contract value per constraint the contract declares."""
    out: list[tuple[str, Any]] = []
    for f in TRANSACTION_FIELDS:
        if f.ge is not None:
            out.append((f.name, f.ge - 1))
        if f.gt is not None:
            out.append((f.name, f.gt))
        if f.le is not None:
            out.append((f.name, f.le + 1))
        if f.choices is not None:
            out.append((f.name, "bogus" if f.kind is Kind.STRING else 5))
        if f.pattern is not None:
            out.append((f.name, "has spaces and UPPER!"))
    return out


@pytest.mark.parametrize(("name", "value"), _violations(), ids=lambda v: str(v))
def test_each_constraint_is_enforced_by_both_views(name: str, value: Any) -> None:
    tx = {**contract.example_transaction(), name: value}
    with pytest.raises(pydantic.ValidationError) as info:
        contract.request_model().model_validate(tx)
    assert [e["loc"] for e in info.value.errors()] == [(name,)]
    with pytest.raises(pandera.errors.SchemaErrors) as schema_info:
        contract.pandera_schema().validate(_frame([tx]), lazy=True)
    cases = schema_info.value.failure_cases
    column_checks = cases[~cases["check"].isin([r.message for r in contract.CROSS_FIELD_RULES])]
    assert set(column_checks["column"].dropna()) == {name}


def _wrong_json_types() -> list[tuple[str, Any, str]]:
    """For every number and timestamp the contract declares, JSON values of another type that pydantic would coerce."""
    out: list[tuple[str, Any, str]] = []
    for f in TRANSACTION_FIELDS:
        if f.choices is not None:
            continue
        if f.kind is Kind.FLOAT:
            out += [(f.name, False, "float_type"), (f.name, True, "float_type"), (f.name, str(f.example), "float_type")]
        elif f.kind is Kind.INTEGER:
            out += [(f.name, True, "int_type"), (f.name, str(f.example), "int_type"), (f.name, 20.5, "int_type")]
        elif f.kind is Kind.TIMESTAMP:
            out += [(f.name, 1772460300, "datetime_type"), (f.name, "1772460300", "datetime_type")]
            out += [(f.name, "2026-03-02T14:05Z", "datetime_type")]  # no seconds: not RFC 3339
    return out


@pytest.mark.parametrize(("name", "value", "error_type"), _wrong_json_types(), ids=lambda v: str(v))
def test_numbers_and_timestamps_are_their_json_type_only(name: str, value: Any, error_type: str) -> None:
    raw = json.dumps({**contract.example_transaction(), name: value})
    with pytest.raises(pydantic.ValidationError) as info:
        contract.request_model().model_validate_json(raw)
    assert [(e["loc"], e["type"]) for e in info.value.errors()] == [((name,), error_type)]


def test_json_integers_are_valid_floats_and_python_datetimes_valid_timestamps() -> None:
    floats = {f.name: int(f.example) for f in TRANSACTION_FIELDS if f.kind is Kind.FLOAT}
    model = contract.request_model().model_validate_json(json.dumps({**contract.example_transaction(), **floats}))
    assert all(isinstance(getattr(model, name), float) for name in floats)
    when = dt.datetime(2026, 3, 2, 14, 5, tzinfo=dt.UTC)
    assert contract.request_model().model_validate({**contract.example_transaction(), "event_timestamp": when})


def test_cross_field_rule_is_enforced_by_both_views() -> None:
    tx = {**contract.example_transaction(), "prior_purchases": 1, "prior_defaults": 2}
    with pytest.raises(pydantic.ValidationError, match="prior_defaults must be <= prior_purchases"):
        contract.request_model().model_validate(tx)
    with pytest.raises(pandera.errors.SchemaErrors, match="prior_defaults must be <= prior_purchases"):
        contract.pandera_schema().validate(_frame([tx]), lazy=True)


def test_unknown_fields_are_rejected_by_both_views() -> None:
    tx = {**contract.example_transaction(), "favourite_colour": "blue"}
    with pytest.raises(pydantic.ValidationError, match="favourite_colour"):
        contract.request_model().model_validate(tx)
    with pytest.raises(pandera.errors.SchemaErrors):
        contract.pandera_schema().validate(_frame([tx]), lazy=True)


def test_missing_fields_are_rejected_by_both_views() -> None:
    tx = contract.example_transaction()
    del tx["credit_limit"]
    with pytest.raises(pydantic.ValidationError, match="credit_limit"):
        contract.request_model().model_validate(tx)
    with pytest.raises(pandera.errors.SchemaErrors):
        contract.pandera_schema().validate(_frame([tx]), lazy=True)


def test_request_rejects_naive_timestamps_and_non_finite_numbers() -> None:
    model = contract.request_model()
    with pytest.raises(pydantic.ValidationError, match="event_timestamp"):
        model.model_validate({**contract.example_transaction(), "event_timestamp": dt.datetime(2026, 3, 2, 14, 5)})
    with pytest.raises(pydantic.ValidationError, match="amount"):
        model.model_validate({**contract.example_transaction(), "amount": float("inf")})
    with pytest.raises(pydantic.ValidationError, match="outstanding_balance"):
        model.model_validate({**contract.example_transaction(), "outstanding_balance": float("nan")})


def test_open_vocabulary_accepts_a_new_merchant_category() -> None:
    tx = {**contract.example_transaction(), "merchant_category": "crypto"}
    assert contract.request_model().model_validate(tx).merchant_category == "crypto"  # type: ignore[attr-defined]
    contract.pandera_schema().validate(_frame([tx]))
