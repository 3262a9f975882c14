"""Feature engineering: one definition for training (a dataframe) and serving (one transaction).

:func:`_engineer` is written once against a tiny set of operations (:class:`_Ops`): with numpy operations it
computes whole columns, with ``math`` operations it computes one row in a few microseconds. Both public entry points
go through it, so training and serving cannot disagree.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shadowgate.contract import FIELDS_BY_NAME, TRANSACTION_FIELDS, Role

NEW_CUSTOMER_DAYS = 90
"""Customers younger than this are 'new' (a feature and a policy segment)."""


def _categories() -> dict[str, tuple[Any, ...]]:
    """Categorical model inputs and their one-hot values, taken from the contract."""
    out: dict[str, tuple[Any, ...]] = {}
    for f in TRANSACTION_FIELDS:
        if f.role is Role.FEATURE and f.categorical and f.kind.value == "string":
            out[f.name] = tuple(f.choices or f.vocabulary or ())
    return out


ONE_HOT: dict[str, tuple[Any, ...]] = _categories()
OPEN_FIELDS: tuple[str, ...] = tuple(name for name in ONE_HOT if FIELDS_BY_NAME[name].vocabulary is not None)


@dataclass(frozen=True)
class _Ops:
    log1p: Callable[[Any], Any]
    sin: Callable[[Any], Any]
    cos: Callable[[Any], Any]
    minimum: Callable[[Any, Any], Any]
    maximum: Callable[[Any, Any], Any]
    not_in: Callable[[Any, tuple[Any, ...]], Any]


_NUMPY = _Ops(
    log1p=np.log1p,
    sin=np.sin,
    cos=np.cos,
    minimum=np.minimum,
    maximum=np.maximum,
    not_in=lambda col, values: ~np.isin(col, values),
)
_SCALAR = _Ops(
    log1p=math.log1p,
    sin=math.sin,
    cos=math.cos,
    minimum=min,
    maximum=max,
    not_in=lambda value, values: value not in values,
)

_TWO_PI_OVER_24 = 2.0 * math.pi / 24.0


def _engineer(c: Mapping[str, Any], hour: Any, weekday: Any, ops: _Ops) -> list[Any]:
    """All features, in :data:`FEATURE_NAMES` order. ``c`` maps contract names to columns or scalars."""
    amount = c["amount"]
    limit = c["credit_limit"]
    balance = c["outstanding_balance"]
    purchases = c["prior_purchases"]
    tenure = c["customer_tenure_days"]
    values: list[Any] = [
        ops.log1p(amount),
        ops.log1p(amount / c["installments"]),
        c["installments"] * 1.0,
        amount / limit,
        balance / limit,
        (balance + amount) / limit,
        ops.log1p(tenure),
        (tenure < NEW_CUSTOMER_DAYS) * 1.0,
        ops.log1p(purchases),
        c["prior_late_payments"] / (purchases + 1.0),
        ops.minimum(c["prior_late_payments"], 20) * 1.0,
        ops.minimum(c["prior_defaults"], 5) * 1.0,
        (c["prior_defaults"] > 0) * 1.0,
        ops.minimum(c["purchases_last_24h"], 20) * 1.0,
        c["amount_last_7d"] / limit,
        c["customer_age"] * 1.0,
        ops.sin(hour * _TWO_PI_OVER_24),
        ops.cos(hour * _TWO_PI_OVER_24),
        (hour < 6) * 1.0,
        weekday * 1.0,
        (weekday >= 5) * 1.0,
    ]
    for name, known in ONE_HOT.items():
        col = c[name]
        values.extend((col == value) * 1.0 for value in known)
        if name in OPEN_FIELDS:
            values.append(ops.not_in(col, known) * 1.0)
    return values


_NUMERIC_NAMES = (
    "amount_log",
    "installment_amount_log",
    "installments",
    "amount_to_limit",
    "utilisation",
    "utilisation_after",
    "tenure_log",
    "is_new_customer",
    "prior_purchases_log",
    "late_rate",
    "prior_late_payments",
    "prior_defaults",
    "has_prior_default",
    "velocity_24h",
    "spend_7d_to_limit",
    "customer_age",
    "hour_sin",
    "hour_cos",
    "is_night",
    "weekday",
    "is_weekend",
)

FEATURE_NAMES: tuple[str, ...] = _NUMERIC_NAMES + tuple(
    name
    for field, known in ONE_HOT.items()
    for name in [*(f"{field}={v}" for v in known), *([f"{field}=other"] if field in OPEN_FIELDS else [])]
)
"""Names of the model inputs, in the order both paths produce them."""

FEATURE_SET = "fs-" + hashlib.sha256("\n".join(FEATURE_NAMES).encode()).hexdigest()[:12]
"""Id of :data:`FEATURE_NAMES` (names and order). A prediction event may carry its features as a bare array (a third
of the bytes of the named object) tagged with this id; readers map the array back to names with
:data:`FEATURE_SETS`, and refuse an id they do not know instead of guessing."""

FEATURE_SETS: dict[str, tuple[str, ...]] = {FEATURE_SET: FEATURE_NAMES}
"""Feature sets this code can read, by id (keep an old set here when the features change)."""

INPUT_FIELDS: tuple[str, ...] = tuple(f.name for f in TRANSACTION_FIELDS if f.role in (Role.FEATURE, Role.TIMESTAMP))
"""Contract fields the features are computed from."""


def features_one(transaction: Mapping[str, Any]) -> list[float]:
    """Features of one transaction (the serving path): a list in :data:`FEATURE_NAMES` order.

    Args:
        transaction: contract field → value; ``event_timestamp`` a time-zone-aware datetime.
    """
    ts: dt.datetime = transaction["event_timestamp"]
    if ts.utcoffset():
        ts = ts.astimezone(dt.UTC)
    return _engineer(transaction, ts.hour, ts.weekday(), _SCALAR)


def features_frame(transactions: pd.DataFrame) -> np.ndarray:
    """Features of many transactions (the training path): a float64 matrix, one row per transaction.

    Args:
        transactions: a frame with at least :data:`INPUT_FIELDS`; ``event_timestamp`` time-zone aware.
    """
    ts = pd.DatetimeIndex(transactions["event_timestamp"]).tz_convert("UTC")
    columns = {name: transactions[name].to_numpy() for name in INPUT_FIELDS if name != "event_timestamp"}
    values = _engineer(columns, ts.hour.to_numpy(), ts.weekday.to_numpy(), _NUMPY)
    return np.column_stack([np.asarray(v, dtype=np.float64) for v in values])
