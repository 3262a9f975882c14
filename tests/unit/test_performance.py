"""Model performance, policy outcomes and segments against hand-computed and published reference values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ks_2samp, mannwhitneyu
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from shadowgate.contract import example_transaction
from shadowgate.decisioning.policies import Decision, DecisionContext, Thresholds, decide, load_policy
from shadowgate.evaluation.performance import (
    ALL,
    LOG_LOSS_EPS,
    POOLED,
    ROC_POINTS,
    SEGMENT_COLUMNS,
    model_performance,
    policy_outcomes,
    segment_table,
    simpsons_reversals,
)

# Ten requests, two equal-mass bins of five: scores are distinct across the boundary.
HAND_SCORES = np.array([0.1, 0.1, 0.2, 0.2, 0.3, 0.6, 0.6, 0.7, 0.8, 0.9])
HAND_LABELS = np.array([0, 0, 1, 0, 0, 1, 0, 1, 1, 1])


def test_hand_computed_example() -> None:
    m = model_performance(HAND_LABELS, HAND_SCORES, n_bins=2)
    # Bin 1: mean PD 0.9/5 = 0.18, observed 1/5; bin 2: mean PD 3.6/5 = 0.72, observed 4/5.
    assert m.reliability.count == (5, 5)
    assert m.reliability.mean_predicted == pytest.approx((0.18, 0.72))
    assert m.reliability.observed_rate == pytest.approx((0.2, 0.8))
    # ECE = 0.5·|0.18−0.2| + 0.5·|0.72−0.8| = 0.01 + 0.04.
    assert m.ece == pytest.approx(0.05)
    # Squared errors 0.01 0.01 0.64 0.04 0.09 | 0.16 0.36 0.09 0.04 0.01 → (0.79 + 0.66) / 10.
    assert m.brier == pytest.approx(0.145)
    # Defaults {0.2, 0.6, 0.7, 0.8, 0.9} vs repaid {0.1, 0.1, 0.2, 0.3, 0.6}: wins 2+½, 4+½, 5, 5, 5 of 25 pairs.
    assert m.auc == pytest.approx(22 / 25)
    # ECDF gap: at t = 0.3 repaid 4/5 vs defaults 1/5 (and the same at 0.6) → 0.6.
    assert m.ks == pytest.approx(0.6)
    assert (m.n, m.n_positive, m.observed_rate) == (10, 5, 0.5)
    assert m.mean_score == pytest.approx(0.45)
    assert m.roc.fpr[0] == m.roc.tpr[0] == 0.0
    assert m.roc.fpr[-1] == m.roc.tpr[-1] == 1.0
    scalars = m.scalars()
    assert scalars["ece"] == m.ece and scalars["n"] == 10.0
    assert not {"reliability", "roc", "score_histogram"} & set(scalars)


def test_result_does_not_depend_on_the_order_of_the_input() -> None:
    order = np.random.default_rng(3).permutation(len(HAND_SCORES))
    assert model_performance(HAND_LABELS[order], HAND_SCORES[order], n_bins=3) == model_performance(
        HAND_LABELS, HAND_SCORES, n_bins=3
    )


def test_tied_scores_share_a_calibration_bin() -> None:
    # The boundary of two equal-mass bins falls inside the run of 0.5s: the run stays in the first bin.
    m = model_performance(np.array([0, 1, 0, 1]), np.array([0.2, 0.5, 0.5, 0.5]), n_bins=2)
    assert m.reliability.count == (4,)
    assert m.ece == pytest.approx(abs(1.7 - 2) / 4)
    distinct = model_performance(np.array([0, 1, 0, 1]), np.array([0.1, 0.2, 0.3, 0.4]), n_bins=4)
    assert distinct.reliability.count == (1, 1, 1, 1)
    assert distinct.ece == pytest.approx((0.1 + 0.8 + 0.3 + 0.6) / 4)


@pytest.mark.parametrize("decimals", [None, 2], ids=["distinct", "ties"])
def test_reference_implementations_agree(decimals: int | None) -> None:
    rng = np.random.default_rng(11)
    p = rng.beta(1.0, 12.0, 20_000)
    if decimals is not None:
        p = np.round(p, decimals)
    y = (rng.random(len(p)) < p).astype(int)
    m = model_performance(y, p)
    pos, neg = p[y == 1], p[y == 0]
    assert m.auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m.auc == pytest.approx(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)), abs=1e-12)
    assert m.pr_auc == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert m.ks == pytest.approx(ks_2samp(pos, neg, method="asymp").statistic, abs=1e-12)
    assert m.brier == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert m.log_loss == pytest.approx(log_loss(y, np.clip(p, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)), abs=1e-12)
    assert sum(m.reliability.count) == len(p)
    assert sum(m.score_histogram.count_default) == len(pos)
    assert sum(m.score_histogram.count_repaid) == len(neg)


# ks_2samp's asymptotic p-value divides by zero for tiny samples; only its statistic is used here.
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.05, 0.1, 0.3, 0.3001, 0.7, 1.0]), st.booleans()), min_size=2))
def test_auc_and_ks_match_scipy_with_heavy_ties(rows: list[tuple[float, bool]]) -> None:
    p = np.array([s for s, _ in rows])
    y = np.array([d for _, d in rows])
    m = model_performance(y, p, n_bins=3)
    if 0 < y.sum() < len(y):
        pos, neg = p[y], p[~y]
        assert m.auc == pytest.approx(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)), abs=1e-12)
        assert m.ks == pytest.approx(ks_2samp(pos, neg, method="asymp").statistic, abs=1e-12)
    else:
        assert math.isnan(m.auc) and math.isnan(m.ks)
    assert sum(m.reliability.count) == len(p)
    assert 0.0 <= m.ece <= 1.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.05, 0.1, 0.3, 0.3001, 0.7, 1.0]), st.booleans()), min_size=2))
def test_the_auc_standard_error_is_delongs_with_heavy_ties(rows: list[tuple[float, bool]]) -> None:
    from shadowgate.evaluation.stats import delong_covariance

    p = np.array([s for s, _ in rows])
    y = np.array([d for _, d in rows])
    m = model_performance(y, p)
    if min(y.sum(), (~y).sum()) >= 2:
        reference = delong_covariance(y, [p])
        assert m.auc_se == pytest.approx(math.sqrt(reference.covariance[0, 0]), abs=1e-12)
    else:
        assert math.isnan(m.auc_se)


def test_log_loss_clips_certain_mistakes() -> None:
    m = model_performance(np.array([1, 0]), np.array([0.0, 1.0]))
    assert m.log_loss == pytest.approx(-math.log(LOG_LOSS_EPS))
    assert m.brier == 1.0


def test_one_class_gives_nan_discrimination_not_an_error() -> None:
    repaid = model_performance(np.zeros(6, dtype=int), np.linspace(0.0, 0.5, 6))
    assert repaid.n_positive == 0
    assert math.isnan(repaid.auc) and math.isnan(repaid.ks) and math.isnan(repaid.pr_auc)
    assert repaid.roc.fpr == ()
    assert repaid.brier == pytest.approx(np.mean(np.linspace(0.0, 0.5, 6) ** 2))
    defaulted = model_performance(np.ones(4, dtype=int), np.array([0.2, 0.4, 0.4, 0.9]))
    assert defaulted.n_positive == defaulted.n == 4
    assert math.isnan(defaulted.auc) and math.isnan(defaulted.ks)
    assert defaulted.pr_auc == 1.0


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([0, 1], [0.2, float("nan")], "not probabilities"),
        ([0, 1], [0.2, 1.2], "not probabilities"),
        ([0, 2], [0.2, 0.3], "only 0/1"),
        ([0, 1, 1], [0.2, 0.3], "one entry per outcome"),
        ([], [], "no rows"),
    ],
)
def test_invalid_input_is_rejected(labels: list[int], scores: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model_performance(np.array(labels), np.array(scores))


def test_roc_curve_is_thinned_for_plots_but_auc_uses_every_point() -> None:
    rng = np.random.default_rng(5)
    p = rng.random(50_000)
    y = (rng.random(len(p)) < p).astype(int)
    m = model_performance(y, p)
    assert len(m.roc.fpr) <= ROC_POINTS + 2
    assert (m.roc.fpr[0], m.roc.tpr[0], m.roc.fpr[-1], m.roc.tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(m.roc.fpr) >= 0) and np.all(np.diff(m.roc.tpr) >= 0)
    assert np.trapezoid(m.roc.tpr, m.roc.fpr) == pytest.approx(m.auc, abs=2e-3)
    assert m.auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)


# --- policy outcomes ----------------------------------------------------------------------------------------------


def test_policy_outcomes_hand_computed() -> None:
    thresholds = load_policy("conservative").thresholds  # deny at >= 0.5, review at >= 0.25
    assert (thresholds.high, thresholds.medium) == (0.5, 0.25)
    scores = np.array([0.1, 0.24, 0.25, 0.3, 0.49, 0.5, 0.9])
    y = np.array([0, 1, 0, 1, 0, 1, 1])
    amounts = np.array([100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0])
    out = policy_outcomes(scores, y, thresholds=thresholds, amounts=amounts, lgd=0.5)
    assert (out.n, out.n_defaults) == (7, 4)
    assert (out.n_approved, out.n_manual_review, out.n_denied) == (2, 3, 2)
    assert (out.n_defaults_approved, out.n_defaults_manual_review, out.n_defaults_denied) == (1, 1, 2)
    assert out.approval_rate == pytest.approx(2 / 7)
    assert out.manual_review_rate == pytest.approx(3 / 7)
    assert out.deny_rate == pytest.approx(2 / 7)
    assert out.default_rate_approved == 0.5
    assert out.exposure_approved == 300.0
    assert out.expected_loss_approved == pytest.approx((100 * 0.1 + 200 * 0.24) * 0.5)
    assert out.realised_loss_approved == pytest.approx(200 * 0.5)
    assert out.amounts_given


def test_policy_outcomes_without_amounts_count_requests() -> None:
    out = policy_outcomes(
        np.array([0.1, 0.2, 0.3, 0.9]), np.array([1, 0, 0, 1]), thresholds=Thresholds(high=0.8, medium=0.25)
    )
    assert out.exposure_approved == 2.0
    assert out.expected_loss_approved == pytest.approx(0.3)
    assert out.realised_loss_approved == 1.0
    assert not out.amounts_given


def test_nothing_approved_leaves_the_default_rate_undefined() -> None:
    out = policy_outcomes(np.array([0.6, 0.9]), np.array([0, 1]), thresholds=Thresholds(high=0.5, medium=0.5))
    assert (out.n_approved, out.n_denied) == (0, 2)
    assert math.isnan(out.default_rate_approved)
    assert out.approval_rate == 0.0


def test_every_policy_figure_names_its_population() -> None:
    out = policy_outcomes(np.array([0.1, 0.9]), np.array([0, 1]), thresholds=Thresholds(high=0.5, medium=0.3))
    figures = out.figures()
    assert all(population for _, _, population in figures)
    settings_not_figures = {"high", "medium", "lgd", "amounts_given"}
    assert {name for name, _, _ in figures} == set(out.__dataclass_fields__) - settings_not_figures
    assert dict((name, value) for name, value, _ in figures)["n_denied"] == 1


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=30),
    st.sampled_from(["conservative", "aggressive"]),
)
def test_policy_outcomes_agree_with_decide(scores: list[float], name: str) -> None:
    policy = load_policy(name)
    # An established customer with a clean file and a small purchase: only the score decides.
    tx = example_transaction() | {
        "amount": 50.0,
        "credit_limit": 2000.0,
        "outstanding_balance": 0.0,
        "customer_tenure_days": 1000,
        "prior_purchases": 20,
        "prior_defaults": 0,
    }
    decisions = [decide(score=s, transaction=tx, context=DecisionContext(), policy=policy).decision for s in scores]
    out = policy_outcomes(np.array(scores), np.zeros(len(scores), dtype=int), thresholds=policy.thresholds)
    assert out.n_approved == decisions.count(Decision.APPROVE)
    assert out.n_manual_review == decisions.count(Decision.MANUAL_REVIEW)
    assert out.n_denied == decisions.count(Decision.DENY)


def test_policy_outcomes_reject_bad_amounts_and_lgd() -> None:
    t = Thresholds(high=0.5, medium=0.3)
    with pytest.raises(ValueError, match="amounts"):
        policy_outcomes(np.array([0.1]), np.array([0]), thresholds=t, amounts=np.array([-1.0]))
    with pytest.raises(ValueError, match="lgd"):
        policy_outcomes(np.array([0.1]), np.array([0]), thresholds=t, lgd=1.5)


# --- segments -----------------------------------------------------------------------------------------------------


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "defaulted": [1, 0, 0, 1, 0, 0, 1, 0],
            "champion": [0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
            "challenger": [0.5, 0.5, 0.1, 0.8, 0.2, 0.3, 0.2, 0.1],
            "channel": ["web", "web", "web", "app", "app", "app", None, None],
            "vip": [False, False, False, False, False, False, False, True],
        }
    )


def test_segment_table_on_a_constructed_dataset() -> None:
    frame = _frame()
    table = segment_table(
        frame,
        label_col="defaulted",
        score_cols={"champion": "champion", "challenger": "challenger"},
        segment_cols=["channel", "vip"],
    )
    assert tuple(table.columns) == SEGMENT_COLUMNS
    keys = list(zip(table["segment"], table["value"].astype(str), table["model"], strict=True))
    assert keys == [
        (POOLED, ALL, "champion"),
        (POOLED, ALL, "challenger"),
        ("channel", "app", "champion"),
        ("channel", "app", "challenger"),
        ("channel", "web", "champion"),
        ("channel", "web", "challenger"),
        ("channel", "None", "champion"),
        ("channel", "None", "challenger"),
        ("vip", "False", "champion"),
        ("vip", "False", "challenger"),
        ("vip", "True", "champion"),
        ("vip", "True", "challenger"),
    ]
    assert table["n"].tolist() == [8, 8, 3, 3, 3, 3, 2, 2, 7, 7, 1, 1]
    assert table["n_positive"].tolist() == [3, 3, 1, 1, 1, 1, 1, 1, 3, 3, 0, 0]
    assert table["default_rate"].tolist() == pytest.approx(
        [3 / 8] * 2 + [1 / 3] * 4 + [1 / 2] * 2 + [3 / 7] * 2 + [0] * 2
    )
    champion = table[table["model"] == "champion"]
    assert champion["mean_score"].tolist() == pytest.approx([3.7 / 8, 1.2 / 3, 1.2 / 3, 1.3 / 2, 3.0 / 7, 0.7])
    # app: the default (0.3) is below both payers; web: 0.9 above both; missing segment: 0.6 below 0.7.
    assert champion["auc"].tolist()[1:4] == [0.0, 1.0, 0.0]
    assert champion["auc"].iloc[0] == pytest.approx(roc_auc_score(frame["defaulted"], frame["champion"]))
    challenger_web = table[(table["model"] == "challenger") & (table["value"] == "web")]["auc"].item()
    assert challenger_web == 0.75  # default 0.5 vs payers 0.5 (tie, ½) and 0.1 (win) → 1.5 / 2
    assert math.isnan(champion["auc"].iloc[-1])  # the one VIP repaid: one class
    for _, per_column in table[table["segment"] != POOLED].groupby(["segment", "model"]):
        assert per_column["n"].sum() == 8


def test_segment_table_with_categorical_columns_keeps_the_missing_segment_and_sorts_values() -> None:
    """The pipeline reads strings as categories (in order of appearance): the table is the same as with strings,
    the missing channel included (a groupby on a categorical with observed=True used to drop it)."""
    frame = _frame()
    as_categories = frame.assign(channel=frame["channel"].astype(pd.CategoricalDtype(["web", "app"])))
    kwargs = {
        "label_col": "defaulted",
        "score_cols": {"champion": "champion", "challenger": "challenger"},
        "segment_cols": ["channel", "vip"],
    }
    expected = segment_table(frame, **kwargs)
    table = segment_table(as_categories, **kwargs)
    pd.testing.assert_frame_equal(table, expected)
    assert table[table["segment"] == "channel"]["value"].tolist() == ["app", "app", "web", "web", None, None]


def _simpsons_frame() -> pd.DataFrame:
    """Two segments of very different base rates. ``ranker`` ranks well inside each segment but ignores the segment;
    ``segmenter`` knows the segment and ranks weakly inside it — so it wins pooled and loses in both segments."""
    rng = np.random.default_rng(2024)
    n = 20_000
    risky = rng.random(n) < 0.5
    x = rng.normal(size=n)
    base = np.where(risky, 0.0, -3.5)
    y = rng.random(n) < 1 / (1 + np.exp(-(base + 1.5 * x)))
    ranker = 1 / (1 + np.exp(-(1.5 * x - 1.5)))
    weak = 0.3 * x + rng.normal(scale=1.0, size=n)
    segmenter = 1 / (1 + np.exp(-(base + weak)))
    return pd.DataFrame(
        {
            "defaulted": y.astype(int),
            "ranker": ranker,
            "segmenter": segmenter,
            "risk_band": np.where(risky, "risky", "safe"),
            "coin": rng.choice(["heads", "tails"], n),
        }
    )


def test_simpsons_reversal_is_flagged() -> None:
    table = segment_table(
        _simpsons_frame(),
        label_col="defaulted",
        score_cols={"ranker": "ranker", "segmenter": "segmenter"},
        segment_cols=["coin", "risk_band"],
    )
    auc = table.set_index(["segment", "value", "model"])["auc"]
    # The construction does what it says: pooled, segmenter wins; inside each risk band, ranker wins.
    assert auc[POOLED, ALL, "segmenter"] > auc[POOLED, ALL, "ranker"]
    for band in ("risky", "safe"):
        assert auc["risk_band", band, "segmenter"] < auc["risk_band", band, "ranker"]
    (reversal,) = simpsons_reversals(table, "segmenter", "ranker")
    assert reversal.segment == "risk_band"
    assert reversal.winner_pooled == "segmenter"
    assert reversal.values == ("risky", "safe")
    assert all(a < b for a, b in reversal.auc_by_value)
    assert reversal.auc_pooled[0] > reversal.auc_pooled[1]
    # Symmetric: the same reversal from the other side.
    (mirrored,) = simpsons_reversals(table, "ranker", "segmenter")
    assert (mirrored.segment, mirrored.winner_pooled) == ("risk_band", "segmenter")
    assert all(a > b for a, b in mirrored.auc_by_value)


def test_no_reversal_when_the_pooled_winner_also_wins_a_segment() -> None:
    table = segment_table(
        _frame(),
        label_col="defaulted",
        score_cols={"champion": "champion", "challenger": "challenger"},
        segment_cols=["channel", "vip"],
    )
    # Pooled: challenger 12/15 beats champion 11/15. By channel the challenger also wins app (1 vs 0), so no
    # reversal; by vip only one segment has both classes, too few to call a reversal.
    assert simpsons_reversals(table, "champion", "challenger") == ()
    with pytest.raises(ValueError, match="not in the segment table"):
        simpsons_reversals(table, "champion", "nobody")
