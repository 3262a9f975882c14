"""One feature definition: the single-row (serving) and batch (training) paths agree exactly."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from shadowgate import contract, features
from tests.strategies import transactions


def _batch(rows: list[dict[str, Any]]) -> np.ndarray:
    df = pd.DataFrame(rows)
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True)
    return features.features_frame(df)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(transactions(), min_size=1, max_size=8))
def test_single_row_and_batch_paths_agree(rows: list[dict[str, Any]]) -> None:
    batch = _batch(rows)
    assert batch.shape == (len(rows), len(features.FEATURE_NAMES))
    for i, row in enumerate(rows):
        one = np.array(features.features_one(row))
        np.testing.assert_allclose(one, batch[i], rtol=1e-12, atol=1e-12)
    assert np.isfinite(batch).all()


def test_engineered_values_of_the_example() -> None:
    tx = contract.example_transaction()
    tx["event_timestamp"] = dt.datetime(2026, 3, 7, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))  # Sat 21:30 UTC
    values = dict(zip(features.FEATURE_NAMES, features.features_one(tx), strict=True))
    assert math.isclose(values["amount_log"], math.log1p(129.99))
    assert math.isclose(values["utilisation"], 250.0 / 1500.0)
    assert math.isclose(values["utilisation_after"], (250.0 + 129.99) / 1500.0)
    assert math.isclose(values["late_rate"], 1 / 8)
    assert values["weekday"] == 5.0 and values["is_weekend"] == 1.0
    assert math.isclose(values["hour_sin"], math.sin(21 * 2 * math.pi / 24))
    assert values["is_night"] == 0.0
    assert values["channel=web"] == 1.0 and values["channel=app"] == 0.0
    assert values["merchant_category=electronics"] == 1.0 and values["merchant_category=other"] == 0.0


def test_unseen_category_goes_to_the_other_bucket() -> None:
    tx = {**contract.example_transaction(), "merchant_category": "crypto"}
    tx["event_timestamp"] = dt.datetime(2026, 3, 2, 3, tzinfo=dt.UTC)
    values = dict(zip(features.FEATURE_NAMES, features.features_one(tx), strict=True))
    assert values["merchant_category=other"] == 1.0
    assert sum(v for k, v in values.items() if k.startswith("merchant_category=")) == 1.0
    assert values["is_night"] == 1.0


def test_one_hot_columns_come_from_the_contract() -> None:
    for name in ("channel", "device"):
        field = contract.FIELDS_BY_NAME[name]
        assert field.choices is not None
        assert [n for n in features.FEATURE_NAMES if n.startswith(f"{name}=")] == [f"{name}={v}" for v in field.choices]
    assert "currency=EUR" not in features.FEATURE_NAMES  # context field, not a model input
    assert len(features.FEATURE_NAMES) == len(set(features.FEATURE_NAMES)) == 38
