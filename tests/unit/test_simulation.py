"""Properties of the BNPL world simulator."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from shadowgate import contract
from shadowgate.config import DriftScenario, SimulationSettings
from shadowgate.simulation import SCENARIO_COLUMNS, SimulationResult, mechanism, read_parquet, write_parquet
from shadowgate.simulation import world as sim
from tests.conftest import SMALL

WINDOW_START = pd.Timestamp(dt.date(2026, 1, 5), tz="UTC")
DRIFT_START = WINDOW_START + pd.Timedelta(days=SMALL["drift_start_day"])
DAY = pd.Timedelta(days=1)
# Every purchase made before the window has settled 90 days into it, so from then on the log shows every event a
# purchase's counters could have seen.
SETTLED = WINDOW_START + pd.Timedelta(days=90)


def test_same_seed_same_world_other_seed_other_world(world: Callable[..., SimulationResult]) -> None:
    a = world()
    b = sim.simulate(SimulationSettings(**SMALL))  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(a.transactions, b.transactions)
    pd.testing.assert_frame_equal(a.outcomes, b.outcomes)
    pd.testing.assert_frame_equal(a.labels, b.labels)
    other = world(seed=6)
    assert not a.transactions["amount"].head(1000).equals(other.transactions["amount"].head(1000))


def test_transactions_satisfy_the_contract(baseline: SimulationResult) -> None:
    tx = baseline.transactions
    assert list(tx.columns) == list(contract.field_names())
    contract.pandera_schema().validate(tx, lazy=True)
    assert tx["transaction_id"].is_unique
    assert tx["event_timestamp"].is_monotonic_increasing
    assert tx["event_timestamp"].min() >= WINDOW_START
    assert tx["event_timestamp"].max() < WINDOW_START + pd.Timedelta(days=SMALL["days"])


def test_default_rate_stays_in_its_band(world: Callable[..., SimulationResult]) -> None:
    result = world(transactions=150_000, customers=15_000)
    target = SimulationSettings().default_rate
    labels = result.labels
    assert 0.8 * target <= labels["is_default"].mean() <= 1.2 * target
    month = (result.transactions["event_timestamp"] - WINDOW_START).dt.days // 28
    by_month = labels.groupby(month.to_numpy())["is_default"].mean()
    assert by_month.between(0.6 * target, 1.4 * target).all(), by_month.round(4).to_dict()
    # The realised rate matches the true probabilities (outcomes are drawn from them).
    assert abs(labels["is_default"].mean() - labels["default_probability"].mean()) < 0.004


def test_no_outcome_is_visible_before_its_due_date(baseline: SimulationResult) -> None:
    out = baseline.outcomes.merge(
        baseline.transactions[["transaction_id", "event_timestamp", "installments"]].rename(
            columns={"event_timestamp": "purchased_at"}
        ),
        on="transaction_id",
        validate="many_to_one",
    )
    assert (out["event_timestamp"] >= out["due_at"]).all()
    assert (out["instalment"].between(2, out["installments"])).all()
    expected_due = out["purchased_at"] + (out["instalment"] - 1) * 14 * DAY
    instalments = out[out["event_type"] != "default"]
    assert (instalments["due_at"] == expected_due[instalments.index]).all()
    late = out[out["event_type"] == "instalment_late"]
    assert (late["event_timestamp"] == late["due_at"] + 3 * DAY).all()
    paid = out[out["event_type"] == "instalment_paid"]
    assert (paid["event_timestamp"] - paid["due_at"]).isin([d * DAY for d in range(0, 11)]).all()
    defaults = out[out["event_type"] == "default"]
    # Declared GRACE days after the due date of the instalment that follows the first missed one.
    assert (defaults["due_at"] == defaults["purchased_at"] + defaults["instalment"] * 14 * DAY).all()
    assert (defaults["event_timestamp"] == defaults["due_at"] + 3 * DAY).all()
    # No purchase learns its outcome within 14 days; the label is settled no earlier than its last event.
    assert (out["event_timestamp"] >= out["purchased_at"] + 14 * DAY).all()
    last_event = out.groupby("transaction_id")["event_timestamp"].max()
    settled = baseline.labels.set_index("transaction_id")["label_known_at"]
    assert (settled.loc[last_event.index] >= last_event).all()


def test_labels_agree_with_the_outcome_log(baseline: SimulationResult) -> None:
    out = baseline.outcomes
    labels = baseline.labels.set_index("transaction_id")
    defaulted = set(out.loc[out["event_type"] == "default", "transaction_id"])
    assert defaulted == set(labels.index[labels["is_default"]])
    paid = out[out["event_type"] == "instalment_paid"].groupby("transaction_id").size()
    tx = baseline.transactions.set_index("transaction_id")
    repaid = labels.index[~labels["is_default"]]
    assert (paid.reindex(repaid, fill_value=0) == tx.loc[repaid, "installments"] - 1).all()
    missed = out[out["event_type"] == "instalment_late"].merge(
        out[out["event_type"] == "default"][["transaction_id", "instalment"]].rename(columns={"instalment": "first"}),
        on="transaction_id",
    )
    # A defaulter misses exactly its first missed instalment and the next one (when there is one).
    counts = missed[missed["instalment"] >= missed["first"]].groupby("transaction_id").size()
    assert counts.isin([1, 2]).all() and len(counts) == len(defaulted)


def _consecutive(result: SimulationResult) -> pd.DataFrame:
    tx = result.transactions.sort_values(["customer_id", "event_timestamp"], kind="stable")
    prev = tx.groupby("customer_id").shift(1)
    pairs = tx.assign(
        prev_ts=prev["event_timestamp"],
        prev_amount=prev["amount"],
        prev_installments=prev["installments"],
        prev_late=prev["prior_late_payments"],
        prev_defaults=prev["prior_defaults"],
        prev_purchases=prev["prior_purchases"],
        prev_balance=prev["outstanding_balance"],
    )
    return pairs[pairs["prev_ts"].notna() & (pairs["prev_ts"] >= SETTLED)]


def _known_between(result: SimulationResult, pairs: pd.DataFrame, kind: str, weight: str | None = None) -> np.ndarray:
    events = result.outcomes[result.outcomes["event_type"] == kind]
    joined = (
        pairs[["customer_id", "prev_ts", "event_timestamp"]]
        .reset_index()
        .merge(
            events[["customer_id", "event_timestamp", "amount"]].rename(columns={"event_timestamp": "known"}),
            on="customer_id",
        )
    )
    inside = joined[(joined["known"] >= joined["prev_ts"]) & (joined["known"] < joined["event_timestamp"])]
    totals = inside.groupby("index")["amount"].sum() if weight else inside.groupby("index").size()
    return totals.reindex(pairs.index, fill_value=0).to_numpy()


def test_counters_only_see_the_past(baseline: SimulationResult) -> None:
    pairs = _consecutive(baseline)
    assert len(pairs) > 5_000
    assert (pairs["prior_purchases"] - pairs["prev_purchases"] == 1).all()
    late = _known_between(baseline, pairs, "instalment_late")
    np.testing.assert_array_equal(pairs["prior_late_payments"] - pairs["prev_late"], late)
    defaults = _known_between(baseline, pairs, "default")
    np.testing.assert_array_equal(pairs["prior_defaults"] - pairs["prev_defaults"], defaults)
    # Balance: + the unpaid instalments of the previous purchase, − payments, − defaults moved to collections.
    paid = _known_between(baseline, pairs, "instalment_paid", weight="amount")
    written_off = _known_between(baseline, pairs, "default", weight="amount")
    added = pairs["prev_amount"] * (pairs["prev_installments"] - 1) / pairs["prev_installments"]
    expected = pairs["prev_balance"] + added - paid - written_off
    np.testing.assert_allclose(pairs["outstanding_balance"], expected.clip(lower=0), atol=0.05)


def test_velocity_counters_match_a_brute_force_count(baseline: SimulationResult) -> None:
    tx = baseline.transactions
    sample = tx[tx["event_timestamp"] >= WINDOW_START + 8 * DAY].sample(400, random_state=1)
    by_customer = dict(tuple(tx.groupby("customer_id")))
    for row in sample.itertuples():
        mine = by_customer[row.customer_id]
        before = mine[mine["event_timestamp"] < row.event_timestamp]
        assert row.purchases_last_24h == (before["event_timestamp"] >= row.event_timestamp - DAY).sum()
        week = before[before["event_timestamp"] >= row.event_timestamp - 7 * DAY]["amount"].sum()
        assert row.amount_last_7d == pytest.approx(week, abs=0.011)


def test_the_true_mechanism_is_non_linear(baseline: SimulationResult) -> None:
    """A gradient-boosted model must have something to find that a linear scorecard cannot."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from shadowgate.features import features_frame

    x = features_frame(baseline.transactions)
    y = baseline.labels["is_default"].to_numpy()
    half = len(y) // 2
    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[:half], y[:half])
    boosted = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.06, random_state=0).fit(x[:half], y[:half])
    auc_linear = roc_auc_score(y[half:], linear.predict_proba(x[half:])[:, 1])
    auc_boosted = roc_auc_score(y[half:], boosted.predict_proba(x[half:])[:, 1])
    auc_truth = roc_auc_score(y[half:], baseline.labels["default_probability"].to_numpy()[half:])
    assert auc_linear < auc_boosted < auc_truth


# --- drift scenarios -------------------------------------------------------------------------------------------

UNTOUCHABLE = set(contract.field_names()) - {"transaction_id"} - sim.DERIVED_FROM_OUTCOMES


def _aligned(a: SimulationResult, b: SimulationResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of both worlds for the same purchase attempt (customer and instant), after the drift start."""
    key = ["customer_id", "event_timestamp"]
    left = pd.concat([a.transactions, a.labels.drop(columns="transaction_id")], axis=1)
    right = pd.concat([b.transactions, b.labels.drop(columns="transaction_id")], axis=1)
    both = left.merge(right, on=key, suffixes=("_a", "_b"), validate="one_to_one")
    both = both[both["event_timestamp"] >= DRIFT_START]
    cols = [c.removesuffix("_a") for c in both.columns if c.endswith("_a")]
    return (
        both[key + [f"{c}_a" for c in cols]].set_axis(key + cols, axis=1),
        both[key + [f"{c}_b" for c in cols]].set_axis(key + cols, axis=1),
    )


@pytest.mark.parametrize("scenario", [s for s in DriftScenario if s is not DriftScenario.NONE])
def test_a_scenario_changes_nothing_before_it_starts(
    scenario: DriftScenario, world: Callable[..., SimulationResult], baseline: SimulationResult
) -> None:
    drifted = world(scenario=scenario)
    before = baseline.transactions["event_timestamp"] < DRIFT_START
    before_drifted = drifted.transactions["event_timestamp"] < DRIFT_START
    pd.testing.assert_frame_equal(baseline.transactions[before], drifted.transactions[before_drifted])
    assert not drifted.labels.loc[before_drifted, "drifted"].any()
    assert drifted.labels.loc[~before_drifted, "drifted"].all()


@pytest.mark.parametrize("scenario", [s for s in DriftScenario if s is not DriftScenario.NONE])
def test_a_scenario_changes_only_what_it_claims(
    scenario: DriftScenario, world: Callable[..., SimulationResult], baseline: SimulationResult
) -> None:
    base, drifted = _aligned(baseline, world(scenario=scenario))
    assert len(base) > 5_000
    claimed = SCENARIO_COLUMNS[scenario]
    for column in sorted(UNTOUCHABLE - claimed):
        pd.testing.assert_series_equal(base[column], drifted[column], check_names=False, obj=column)
    for column in claimed:
        assert (base[column] != drifted[column]).mean() > 0.05, column


def test_covariate_shift_grows_baskets_and_opens_a_channel(
    world: Callable[..., SimulationResult], baseline: SimulationResult
) -> None:
    base, drifted = _aligned(baseline, world(scenario=DriftScenario.COVARIATE_SHIFT))
    ratio = drifted["amount"] / base["amount"]
    assert ratio.median() == pytest.approx(sim.BASKET_GROWTH, rel=0.01)
    assert (base["channel"] == "social").sum() == 0
    assert (drifted["channel"] == "social").mean() == pytest.approx(sim.NEW_CHANNEL_SHARE, abs=0.02)


def test_new_merchant_category_appears_only_after_the_start(world: Callable[..., SimulationResult]) -> None:
    result = world(scenario=DriftScenario.NEW_MERCHANT_CATEGORY)
    tx = result.transactions
    crypto = tx["merchant_category"] == sim.NEW_CATEGORY
    assert not crypto[tx["event_timestamp"] < DRIFT_START].any()
    assert crypto[tx["event_timestamp"] >= DRIFT_START].mean() == pytest.approx(sim.NEW_CATEGORY_SHARE, abs=0.02)
    assert tx.loc[crypto, "merchant_id"].str.startswith("mer_n").all()


def _logit(p: pd.Series) -> np.ndarray:
    return np.log(p.to_numpy() / (1 - p.to_numpy()))


def _recomputed_logit(frame: pd.DataFrame, intercept: float) -> np.ndarray:
    columns = {c: frame[c].to_numpy() for c in contract.field_names() if c in frame}
    hour = frame["event_timestamp"].dt.hour.to_numpy()
    return mechanism.logit_without_intercept(columns, hour=hour, latent=frame["latent_risk"].to_numpy()) + intercept


@pytest.mark.parametrize("scenario", [DriftScenario.COVARIATE_SHIFT, DriftScenario.NEW_MERCHANT_CATEGORY])
def test_covariate_scenarios_keep_the_concept(scenario: DriftScenario, world: Callable[..., SimulationResult]) -> None:
    result = world(scenario=scenario)
    frame = pd.concat([result.transactions, result.labels.drop(columns="transaction_id")], axis=1)
    np.testing.assert_allclose(
        _logit(frame["default_probability"]), _recomputed_logit(frame, result.intercept), atol=1e-8
    )


def test_concept_shock_lifts_only_its_segment(world: Callable[..., SimulationResult]) -> None:
    result = world(scenario=DriftScenario.CONCEPT_SHOCK)
    frame = pd.concat([result.transactions, result.labels.drop(columns="transaction_id")], axis=1)
    lift = _logit(frame["default_probability"]) - _recomputed_logit(frame, result.intercept)
    columns = {c: frame[c].to_numpy() for c in ("customer_age", "channel")}
    shocked = mechanism.concept_shock_segment(columns) & (frame["event_timestamp"] >= DRIFT_START).to_numpy()
    assert shocked.sum() > 300
    np.testing.assert_allclose(lift[shocked], mechanism.CONCEPT_SHOCK_LIFT, atol=1e-8)
    np.testing.assert_allclose(lift[~shocked], 0.0, atol=1e-8)
    assert frame.loc[shocked, "is_default"].mean() > 2 * frame.loc[~shocked, "is_default"].mean()


def test_parquet_round_trip(baseline: SimulationResult, tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    written = write_parquet(baseline, folder)
    assert sorted(p.name for p in written.values()) == ["labels.parquet", "outcomes.parquet", "transactions.parquet"]
    tables = read_parquet(folder)
    pd.testing.assert_frame_equal(tables["transactions"], baseline.transactions)
    pd.testing.assert_frame_equal(tables["outcomes"], baseline.outcomes)
    assert not list(folder.glob("*.tmp"))
