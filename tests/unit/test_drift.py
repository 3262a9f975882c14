"""The drift statistics: PSI on the reference's bins, the noise bound, unseen categories, the stored profile."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from shadowgate.evaluation.drift import (
    ReferenceProfile,
    build_profile,
    check_day,
    noise_level,
    numeric_bins,
    profile_numeric,
    psi,
)

counts = st.lists(st.integers(min_value=0, max_value=10_000), min_size=2, max_size=30)


@given(counts)
def test_psi_of_a_distribution_with_itself_is_zero(c: list[int]) -> None:
    if sum(c) == 0:
        return
    assert psi(np.array(c), np.array(c)) == pytest.approx(0.0, abs=1e-12)


@given(st.data())
def test_psi_is_symmetric_and_never_negative(data: st.DataObject) -> None:
    a = data.draw(counts)
    b = data.draw(st.lists(st.integers(0, 10_000), min_size=len(a), max_size=len(a)))
    if sum(a) == 0 or sum(b) == 0:
        return
    forward, backward = psi(np.array(a), np.array(b)), psi(np.array(b), np.array(a))
    assert forward >= -1e-12
    assert forward == pytest.approx(backward, rel=1e-9, abs=1e-12)


def test_psi_matches_the_textbook_figure() -> None:
    # Two bins 50/50 → 60/40 (no empty bins: the prior's effect is below 1e-5 at these counts).
    ref, cur = np.array([500_000, 500_000]), np.array([600_000, 400_000])
    expected = (0.6 - 0.5) * np.log(0.6 / 0.5) + (0.4 - 0.5) * np.log(0.4 / 0.5)
    assert psi(ref, cur) == pytest.approx(expected, rel=1e-5)


def test_a_tied_value_keeps_its_own_bin() -> None:
    ref = np.array([0.0] * 80 + [1.0] * 15 + [2.0] * 5)
    profile = profile_numeric("prior_defaults", ref, bins=10)
    # deciles, interpolated: 0 (ties), 0.2 (between 0 and 1 at the 80th percentile), 1 (ties)
    assert profile.edges == pytest.approx((0.0, 0.2, 1.0))
    # values below, equal to, between and above the edges, and missing
    bins = numeric_bins(np.array([0.0, 1.0]), np.array([-1.0, 0.0, 0.5, 1.0, 3.0, np.nan]))
    assert bins.tolist() == [0, 1, 2, 3, 4, 5]
    assert profile.counts == (0, 80, 0, 0, 0, 15, 5, 0)
    assert profile.occupied_bins == 3


def test_the_noise_bound_holds_its_level_on_days_from_the_reference_itself() -> None:
    """Floor 0: only the χ² bound decides. Days drawn from the reference's own distribution flag at about α."""
    rng = np.random.default_rng(3)
    reference = rng.lognormal(4.0, 0.6, 50_000)
    profile = build_profile({"amount": reference}, categorical=(), model_version="1")
    alpha, days = 0.05, 2_000
    flagged = sum(
        check_day(profile, {"amount": rng.lognormal(4.0, 0.6, 2_000)}, floor=0.0, alpha=alpha).drift
        for _ in range(days)
    )
    rate, se = flagged / days, np.sqrt(alpha * (1 - alpha) / days)
    assert abs(rate - alpha) < 4 * se + 0.01, rate


def test_noise_level_is_the_chi_squared_quantile_scaled_by_both_sizes() -> None:
    level = noise_level(10, 5_000, 20_000, alpha=0.01, n_columns=16)
    assert level == pytest.approx(sps.chi2.isf(0.01 / 16, 9) * (1 / 5_000 + 1 / 20_000))


def _categorical_reference(n: int = 20_000) -> ReferenceProfile:
    rng = np.random.default_rng(5)
    values = rng.choice(np.array(["web", "app", "in_store"]), n, p=[0.45, 0.4, 0.15])
    return build_profile({"channel": values}, categorical=("channel",), model_version="1")


def test_one_stray_unseen_row_in_half_a_million_is_never_drift() -> None:
    rng = np.random.default_rng(6)
    day = rng.choice(np.array(["web", "app", "in_store"]), 500_000, p=[0.45, 0.4, 0.15]).astype(object)
    day[17] = "social"
    decision = check_day(_categorical_reference(), {"channel": day})
    column = decision.column("channel")
    assert not decision.found
    assert column.unseen_share == pytest.approx(1 / 500_000)
    assert column.unseen_values == (("social", 1),)


def test_a_new_category_above_the_share_alerts_on_its_own_check() -> None:
    rng = np.random.default_rng(7)
    day = rng.choice(np.array(["web", "app", "in_store", "social"]), 50_000, p=[0.4, 0.35, 0.1, 0.15])
    decision = check_day(_categorical_reference(), {"channel": day}, unseen_alert_share=0.05)
    assert decision.unseen_columns == ("channel",)
    assert decision.found
    assert decision.column("channel").unseen_share == pytest.approx(0.15, abs=0.01)


def test_integer_categories_match_their_string_names() -> None:
    profile = build_profile(
        {"installments": np.array([3, 4, 4, 6] * 1000)}, categorical=("installments",), model_version="1"
    )
    assert profile.column("installments").categories == ("3", "4", "6")
    decision = check_day(profile, {"installments": np.array(["4", "4", "3", "6"] * 1000, dtype=object)})
    assert decision.column("installments").unseen_share == 0.0
    assert decision.column("installments").psi == pytest.approx(0.0, abs=1e-9)


def test_a_column_that_moves_inside_the_reference_period_gets_its_wander() -> None:
    rng = np.random.default_rng(8)
    n = 20_000
    t = np.sort(rng.uniform(0, 100, n))
    trend = 600 + 3.0 * t + rng.normal(0, 100, n)  # tenure-like: grows with time
    still = rng.normal(0, 1, n)
    profile = build_profile({"trend": trend, "still": still}, categorical=(), model_version="1", timestamps=t)
    assert profile.column("trend").wander > 0.2
    assert profile.column("still").wander < 0.01


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=2**31))
def test_the_profile_survives_json(seed: int) -> None:
    rng = np.random.default_rng(seed)
    profile = build_profile(
        {"amount": rng.lognormal(4, 1, 500), "device": rng.choice(np.array(["ios", "android"]), 500)},
        categorical=("device",),
        model_version="7",
        timestamps=np.arange(500),
        source="runs:/abc/reference/reference.parquet",
    )
    again = ReferenceProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again == profile
    day = {"amount": rng.lognormal(4.2, 1, 300), "device": rng.choice(np.array(["ios", "android", "other"]), 300)}
    assert check_day(again, day) == check_day(profile, day)
