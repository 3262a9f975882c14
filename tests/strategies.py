"""Hypothesis strategies derived from the feature contract (so tests follow the contract, not a copy of it)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import strategies as st

from shadowgate.contract import TRANSACTION_FIELDS, ContractField, Kind


def _field_strategy(field: ContractField) -> st.SearchStrategy[Any]:
    if field.choices is not None:
        return st.sampled_from(field.choices)
    if field.kind is Kind.TIMESTAMP:
        return st.datetimes(
            min_value=dt.datetime(2020, 1, 1),
            max_value=dt.datetime(2030, 1, 1),
            timezones=st.sampled_from(
                [dt.UTC, dt.timezone(dt.timedelta(hours=2)), dt.timezone(dt.timedelta(hours=-5, minutes=-30))]
            ),
        )
    if field.kind is Kind.STRING:
        assert field.pattern is not None
        if field.vocabulary is not None:
            return st.one_of(st.sampled_from(field.vocabulary), st.from_regex(field.pattern, fullmatch=True))
        return st.from_regex(field.pattern, fullmatch=True)
    lo = field.ge if field.ge is not None else field.gt
    hi = field.le
    if field.kind is Kind.INTEGER:
        return st.integers(min_value=int(lo or 0), max_value=int(hi if hi is not None else 10**6))
    return st.floats(
        min_value=float(lo or 0.0),
        max_value=float(hi if hi is not None else 1e6),
        exclude_min=field.gt is not None,
        allow_nan=False,
        allow_infinity=False,
    )


@st.composite
def transactions(draw: st.DrawFn) -> dict[str, Any]:
    """A valid transaction: every field within its contract constraints, cross-field rules satisfied."""
    tx = {f.name: draw(_field_strategy(f)) for f in TRANSACTION_FIELDS}
    tx["prior_defaults"] = min(tx["prior_defaults"], tx["prior_purchases"])
    return tx
