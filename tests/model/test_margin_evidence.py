"""The measurements behind the comparison's minimum meaningful margin δ: how far two retrains of one recipe truly
differ (twin noise), how far the approved-only evaluation shifts a difference of AUCs (selection bias), and what the
planner needs to turn defaults per week into information (the paired variance per default, its week-to-week noise).
The README's "Why the margin" paragraph quotes these figures.

One seeded stable world of 300,000 attempts (234,354 purchases over 26 weeks). Each family trains on eight-week
windows of purchases starting on days 0, 7, …, 28 (a weekly retrain on a rolling window: each pair of neighbours is a
twin), the gradient boosting also on the first window with seeds 12–16 (a twin that differs by its seed only). Every
model then scores every applicant from day 91 on (120,746 purchases, a week after the last window ends).

*True* AUCs come from the simulator's default probabilities, not from the one draw of outcomes the world made: the
AUC expected over outcome draws, ``Σ p_i (1 − p_j) 1[s_i > s_j] / Σ p_i (1 − p_j)`` over distinct purchases. A
twin's difference (a few 1e-4) is smaller than the DeLong SE of the same difference measured on the drawn outcomes
(≈ 5e-4 for the boosting twins), so the drawn outcomes cannot show it; the expected AUC can (what is left is the
sampling of applicants: an SE ≤ 1e-4, estimated from the population's two halves). The evaluation itself only sees
the champion's approved purchases (approve below 0.25, the conservative policy's medium cut-off): there the
planner's inputs are measured on drawn outcomes, as DeLong sees them.

Reproduce: ``OMP_NUM_THREADS=1 pytest tests/model/test_margin_evidence.py -s`` (about 80 s of CPU, most of it
fitting 16 models).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import scipy.stats as sps
from sklearn.metrics import roc_auc_score

from shadowgate.evaluation.stats import delong_covariance, delong_test
from shadowgate.features import FEATURE_NAMES, features_frame
from shadowgate.simulation import SimulationResult
from shadowgate.training.train import ModelKind, build_estimator

pytestmark = pytest.mark.slow

APPROVE_BELOW = 0.25  # the conservative policy's medium cut-off
WINDOW_DAYS = 56  # eight weeks per training window (the shipped models train on ≈ 64 days of matured purchases)
RETRAINS = 5  # windows starting on days 0, 7, …, 28: four weekly-retrain twin pairs per family
HELD_OUT_FROM_DAY = 91  # a week after the last window ends
SEED = 11  # TrainingSettings.seed
SEED_TWINS = ((11, 12), (13, 14), (15, 16))
SCORECARD, BOOSTING = ModelKind.SCORECARD, ModelKind.GRADIENT_BOOSTING

Key = tuple[ModelKind, int, int]
"""(family, first week of the training window, seed)."""


@dataclass(frozen=True)
class HeldOut:
    """Every applicant after the training windows and what each model made of them."""

    is_default: np.ndarray
    probability: np.ndarray
    day: np.ndarray
    customer: np.ndarray
    scores: dict[Key, np.ndarray]

    def approved_by(self, champion: Key) -> np.ndarray:
        return self.scores[champion] < APPROVE_BELOW


@pytest.fixture(scope="module")
def held_out(world: Callable[..., SimulationResult]) -> HeldOut:
    w = world(transactions=300_000, customers=30_000)
    x = pd.DataFrame(features_frame(w.transactions), columns=list(FEATURE_NAMES))
    y = w.labels["is_default"].to_numpy(dtype=np.int64)
    day = (w.transactions["event_timestamp"] - w.transactions["event_timestamp"].min()).dt.days.to_numpy()
    test = day >= HELD_OUT_FROM_DAY

    def scores(kind: ModelKind, week: int, seed: int) -> np.ndarray:
        train = (day >= 7 * week) & (day < 7 * week + WINDOW_DAYS)
        model = build_estimator(kind, seed=seed).fit(x[train], y[train])
        return np.asarray(model.predict_proba(x[test])[:, 1])

    fitted = {(kind, week, SEED): scores(kind, week, SEED) for kind in ModelKind for week in range(RETRAINS)}
    for seed in sorted({s for pair in SEED_TWINS for s in pair} - {SEED}):
        fitted[(BOOSTING, 0, seed)] = scores(BOOSTING, 0, seed)
    # The scorecard's solver has no randomness: a seed-only twin is the same model (checked once, not assumed).
    fitted[(SCORECARD, 0, SEED + 1)] = scores(SCORECARD, 0, SEED + 1)
    return HeldOut(
        is_default=y[test],
        probability=w.labels["default_probability"].to_numpy()[test],
        day=day[test],
        customer=w.transactions["customer_id"].to_numpy()[test],
        scores=fitted,
    )


def expected_auc(scores: np.ndarray, probability: np.ndarray) -> float:
    """The AUC expected over outcome draws when purchase i defaults with probability p_i (ties count one half).

    ``Σ_{i≠j} p_i (1 − p_j) (1[s_i > s_j] + ½ 1[s_i = s_j]) / Σ_{i≠j} p_i (1 − p_j)``: a purchase is never compared
    with itself (it cannot both default and repay), hence the diagonal ``p_i (1 − p_i)`` taken out of both sums.
    """
    values, group = np.unique(scores, return_inverse=True)
    defaults = np.bincount(group, weights=probability, minlength=len(values))
    repaid = np.bincount(group, weights=1.0 - probability, minlength=len(values))
    below = np.cumsum(repaid) - repaid
    diagonal = float(np.sum(probability * (1.0 - probability)))
    numerator = float(np.sum(defaults * (below + 0.5 * repaid))) - 0.5 * diagonal
    return numerator / (float(defaults.sum() * repaid.sum()) - diagonal)


def true_difference(data: HeldOut, challenger: Key, champion: Key, rows: np.ndarray | None = None) -> float:
    """Expected AUC(challenger) − AUC(champion) on ``rows`` (every applicant by default)."""
    keep = np.ones(len(data.probability), dtype=bool) if rows is None else rows
    p = data.probability[keep]
    return expected_auc(data.scores[challenger][keep], p) - expected_auc(data.scores[champion][keep], p)


def weekly_retrain_twins(kind: ModelKind) -> list[tuple[Key, Key]]:
    """(champion, challenger): this week's retrain challenges last week's."""
    return [((kind, week, SEED), (kind, week + 1, SEED)) for week in range(RETRAINS - 1)]


def seed_twins() -> list[tuple[Key, Key]]:
    return [((BOOSTING, 0, a), (BOOSTING, 0, b)) for a, b in SEED_TWINS]


def shipped_pairs() -> list[tuple[Key, Key]]:
    """The scorecard champion and the boosting challenger trained on the same window."""
    return [((SCORECARD, week, SEED), (BOOSTING, week, SEED)) for week in range(RETRAINS)]


TWIN_GROUPS: dict[str, list[tuple[Key, Key]]] = {
    "scorecard, weekly retrain": weekly_retrain_twins(SCORECARD),
    "boosting, weekly retrain": weekly_retrain_twins(BOOSTING),
    "boosting, seed only": seed_twins(),
}


def _rounded(values: dict[str, float], digits: int = 5) -> dict[str, float]:
    return {k: round(float(v), digits) for k, v in values.items()}


def test_expected_auc_is_the_mean_over_distinct_pairs() -> None:
    rng = np.random.default_rng(3)
    scores, p = np.round(rng.random(300), 1), rng.beta(1.0, 8.0, 300)  # rounded: many ties
    gt = (scores[:, None] > scores[None, :]) + 0.5 * (scores[:, None] == scores[None, :])
    weight = p[:, None] * (1.0 - p[None, :])
    np.fill_diagonal(weight, 0.0)
    assert expected_auc(scores, p) == pytest.approx(float((weight * gt).sum() / weight.sum()), rel=1e-12)
    # One draw of outcomes scatters around it.
    draws = [roc_auc_score(rng.random(300) < p, scores) for _ in range(400)]
    assert float(np.mean(draws)) == pytest.approx(expected_auc(scores, p), abs=0.01)


def test_twin_retrains_truly_differ_by_less_than_a_thousandth(held_out: HeldOut) -> None:
    data = held_out
    everyone = np.ones(len(data.probability), dtype=bool)
    even = np.arange(len(everyone)) % 2 == 0
    assert np.array_equal(data.scores[(SCORECARD, 0, SEED)], data.scores[(SCORECARD, 0, SEED + 1)])

    summary: dict[str, dict[str, float]] = {}
    for group, pairs in TWIN_GROUPS.items():
        rows = []
        for champion, challenger in pairs:
            drawn = delong_test(data.is_default, data.scores[challenger], data.scores[champion])
            halves = [true_difference(data, challenger, champion, half) for half in (even, ~even)]
            rows.append(
                {
                    "true": true_difference(data, challenger, champion, everyone),
                    "halves_gap": abs(halves[0] - halves[1]),
                    "drawn": drawn.difference,
                    "drawn_se": drawn.se,
                }
            )
            print(group, champion[1:], "→", challenger[1:], _rounded(rows[-1]))
        true = np.array([r["true"] for r in rows])
        summary[group] = {
            "mean |Δ|": float(np.mean(np.abs(true))),
            "max |Δ|": float(np.max(np.abs(true))),
            "sd": float(np.std(true, ddof=1)),
            "mean Δ": float(np.mean(true)),
            "DeLong SE of one draw": float(np.mean([r["drawn_se"] for r in rows])),
            "SE from halves": float(np.sqrt(np.mean([r["halves_gap"] ** 2 for r in rows])) / 2),
        }
        print(group, _rounded(summary[group]))

    # The expected AUC is precise well below the twins' differences: what is left is the sampling of applicants,
    # whose SE the gap between the population's two halves (even and odd rows) estimates (gap² ≈ 4 SE²).
    assert all(s["SE from halves"] < 1.5e-4 for s in summary.values())
    # What a margin has to clear: no twin of either family differs by 0.001; the seeded figures.
    assert max(s["max |Δ|"] for s in summary.values()) < 0.001
    assert {g: [round(s[k], 4) for k in ("mean |Δ|", "max |Δ|", "sd", "mean Δ")] for g, s in summary.items()} == {
        "scorecard, weekly retrain": pytest.approx([0.0004, 0.0006, 0.0003, 0.0003], abs=1.5e-4),
        "boosting, weekly retrain": pytest.approx([0.0004, 0.0007, 0.0004, 0.0003], abs=1.5e-4),
        "boosting, seed only": pytest.approx([0.0003, 0.0005, 0.0004, 0.0001], abs=1.5e-4),
    }
    # One draw of outcomes on 120,746 applicants (6,601 defaults) measures a boosting twin's difference with an SE
    # as large as the difference itself: twin noise cannot be read off drawn outcomes at this size.
    boosting = summary["boosting, weekly retrain"]
    assert boosting["DeLong SE of one draw"] > boosting["mean |Δ|"]


def test_the_approved_only_difference_favours_the_boosting_challenger(held_out: HeldOut) -> None:
    data = held_out
    everyone = np.ones(len(data.probability), dtype=bool)

    def bias(champion: Key, challenger: Key) -> float:
        approved = data.approved_by(champion)
        return true_difference(data, challenger, champion, approved) - true_difference(
            data, challenger, champion, everyone
        )

    shipped = np.array([bias(champion, challenger) for champion, challenger in shipped_pairs()])
    reversed_roles = np.array([bias(challenger, champion) for champion, challenger in shipped_pairs()])
    twin_pairs = [pair for pairs in TWIN_GROUPS.values() for pair in pairs]
    twins = np.array([bias(champion, challenger) for champion, challenger in twin_pairs])
    # What the evaluation would see of a twin with unlimited data: its true difference plus the shift.
    twins_approved = np.array(
        [true_difference(data, challenger, champion, data.approved_by(champion)) for champion, challenger in twin_pairs]
    )
    champion, challenger = shipped_pairs()[0]
    approved = data.approved_by(champion)
    drawn_all = delong_test(data.is_default, data.scores[challenger], data.scores[champion]).difference
    drawn_approved = delong_test(
        data.is_default[approved], data.scores[challenger][approved], data.scores[champion][approved]
    ).difference
    figures = {
        "approved share": float(approved.mean()),
        "shipped: true Δ, all": true_difference(data, challenger, champion, everyone),
        "shipped: true Δ, approved": true_difference(data, challenger, champion, approved),
        "shipped: drawn Δ, all": drawn_all,
        "shipped: drawn Δ, approved": drawn_approved,
        "shipped bias, mean": float(shipped.mean()),
        "shipped bias, min": float(shipped.min()),
        "shipped bias, max": float(shipped.max()),
        "roles reversed (boosting decides, scorecard challenges): bias, mean": float(reversed_roles.mean()),
        "twins: bias, mean": float(twins.mean()),
        "twins: bias, max |·|": float(np.max(np.abs(twins))),
        "twins: true Δ on the approved, mean |·|": float(np.mean(np.abs(twins_approved))),
        "twins: true Δ on the approved, max |·|": float(np.max(np.abs(twins_approved))),
    }
    print(_rounded(figures))
    # With the scorecard deciding, the approved-only difference overstates the boosting challenger's true lead in
    # every window, by far more than twins differ; twins are shifted by less than 0.001.
    assert (shipped > 0.005).all()
    assert figures["twins: bias, max |·|"] < 0.001
    assert figures["twins: true Δ on the approved, max |·|"] < 0.0015
    # Not only the decider's own cut: with the roles reversed the scorecard challenger is understated. The approved
    # population itself favours the boosting ranking over the scorecard's, whichever of them decides.
    assert (reversed_roles < 0).all()
    assert [round(figures[k], 4) for k in figures] == pytest.approx(
        [0.9461, 0.0117, 0.0199, 0.0102, 0.0172, 0.0077, 0.0073, 0.0082, -0.0036, 0.0002, 0.0006, 0.0006, 0.0013],
        abs=2e-4,
    )


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1.0 - p))


def _weekly_draws(
    y: np.ndarray, champion: np.ndarray, challenger: np.ndarray, *, defaults: int, draws: int, seed: int
) -> Iterator[tuple[float, float]]:
    """(ΔAUC, DeLong SE) of weeks with ``defaults`` defaults drawn from these rows (with replacement, at their
    default rate): how one week's estimate and its SE scatter."""
    rng = np.random.default_rng(seed)
    positive, negative = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    repaid = round(defaults * len(negative) / len(positive))
    for _ in range(draws):
        rows = np.concatenate([rng.choice(positive, defaults), rng.choice(negative, repaid)])
        result = delong_test(y[rows], challenger[rows], champion[rows])
        yield result.difference, result.se


def test_planner_inputs_on_the_approved_rows(held_out: HeldOut) -> None:
    data = held_out
    pairs = {
        "shipped": shipped_pairs()[0],
        "boosting twin": weekly_retrain_twins(BOOSTING)[0],
        "scorecard twin": weekly_retrain_twins(SCORECARD)[0],
    }
    figures: dict[str, dict[str, float]] = {}
    for name, (champion_key, challenger_key) in pairs.items():
        approved = data.approved_by(champion_key)
        y = data.is_default[approved]
        champion, challenger = data.scores[champion_key][approved], data.scores[challenger_key][approved]
        result = delong_test(y, challenger, champion)
        row = {"defaults": float(y.sum()), "ΔAUC": result.difference}
        for label, cls in (("defaults", 1), ("repaid", 0)):
            in_class = y == cls
            row[f"pearson logit, {label}"] = float(
                sps.pearsonr(_logit(champion[in_class]), _logit(challenger[in_class]))[0]
            )
            row[f"spearman, {label}"] = float(sps.spearmanr(champion[in_class], challenger[in_class])[0])
        row["SE² × defaults"] = result.se**2 * y.sum()
        row["champion alone: SE² × defaults"] = float(delong_covariance(y, [champion]).covariance[0, 0]) * y.sum()
        if name != "scorecard twin":
            for defaults, draws in ((500, 200), (3000, 50)):
                drawn = np.array(list(_weekly_draws(y, champion, challenger, defaults=defaults, draws=draws, seed=1)))
                row[f"{defaults}/week: CV of SE"] = float(np.std(drawn[:, 1], ddof=1) / np.mean(drawn[:, 1]))
                row[f"{defaults}/week: sd of Δ / mean SE"] = float(np.std(drawn[:, 0], ddof=1) / np.mean(drawn[:, 1]))
                row[f"{defaults}/week: mean SE² × defaults"] = float(np.mean(drawn[:, 1] ** 2) * defaults)
        figures[name] = row
        print(name, _rounded(row, 4))

    shipped, twin, scorecard_twin = figures["shipped"], figures["boosting twin"], figures["scorecard twin"]
    # Pairing pays: the paired difference's variance is a fraction of one AUC's, and the more so the more alike.
    assert shipped["SE² × defaults"] < shipped["champion alone: SE² × defaults"] / 3
    assert scorecard_twin["SE² × defaults"] < twin["SE² × defaults"] < shipped["SE² × defaults"]
    # DeLong's SE is calibrated for a week's worth of defaults (the scatter of the estimate matches it) and stable
    # enough to count information by (CV ≈ 5 % at 500 defaults, ≈ 2 % at 3,000: the SE of one week's 1/SE² is
    # about twice that).
    for row in (shipped, twin):
        assert 0.85 < row["500/week: sd of Δ / mean SE"] < 1.15
        assert 0.7 < row["3000/week: sd of Δ / mean SE"] < 1.3  # 50 draws: the ratio itself is ±10 %
        assert row["3000/week: CV of SE"] < row["500/week: CV of SE"] < 0.08
        assert row["500/week: mean SE² × defaults"] == pytest.approx(row["SE² × defaults"], rel=0.05)
    keys = ("pearson logit, defaults", "spearman, defaults", "pearson logit, repaid", "spearman, repaid")
    assert {n: [round(r[k], 3) for k in keys] for n, r in figures.items()} == {
        "shipped": pytest.approx([0.799, 0.794, 0.880, 0.889], abs=0.005),
        "boosting twin": pytest.approx([0.952, 0.947, 0.961, 0.958], abs=0.005),
        "scorecard twin": pytest.approx([0.998, 0.998, 0.999, 0.999], abs=0.002),
    }
    assert [shipped["defaults"], twin["defaults"], scorecard_twin["defaults"]] == [3793, 3534, 3793]
    assert [shipped["SE² × defaults"], twin["SE² × defaults"], scorecard_twin["SE² × defaults"]] == pytest.approx(
        [0.0138, 0.0040, 0.00012], rel=0.05
    )
    assert [shipped["500/week: CV of SE"], twin["500/week: CV of SE"]] == pytest.approx([0.052, 0.054], abs=0.01)


def _placements(default: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """A default's share of repaid rows it outranks; a repaid row's share of defaults that outrank it (ties ½)."""

    def below(sorted_: np.ndarray) -> np.ndarray:
        return (np.searchsorted(sorted_, scores, "left") + np.searchsorted(sorted_, scores, "right")) / 2.0

    n_pos = int(default.sum())
    return np.where(
        default, below(np.sort(scores[~default])) / (len(scores) - n_pos), 1.0 - below(np.sort(scores[default])) / n_pos
    )


def _influence(y: np.ndarray, champion: np.ndarray, challenger: np.ndarray) -> np.ndarray:
    """Each row's term in the first-order projection of ΔAUC(challenger − champion): (its placement difference −
    ΔAUC) / the size of its class. Their sum of squares is DeLong's variance; summed per customer first, the
    customer-clustered variance."""
    default = y == 1
    difference = _placements(default, challenger) - _placements(default, champion)
    centred = difference - float(difference[default].mean())
    return np.where(default, centred / default.sum(), centred / (~default).sum())


def test_repeat_customers_and_what_they_do_to_the_se(held_out: HeldOut) -> None:
    data = held_out
    champion_key, challenger_key = shipped_pairs()[0]
    approved = data.approved_by(champion_key)
    y, week, customer = data.is_default[approved], data.day[approved] // 7, data.customer[approved]
    champion, challenger = data.scores[champion_key][approved], data.scores[challenger_key][approved]
    frame = pd.DataFrame({"customer": customer, "week": week})
    per_week = frame.groupby(["week", "customer"]).size()
    repeat_share_by_week = per_week[per_week > 1].groupby(level="week").sum() / per_week.groupby(level="week").sum()
    per_period = frame.groupby("customer").size()
    _, cluster = np.unique(customer, return_inverse=True)

    def clustered_over_plain(rows: np.ndarray) -> float:
        psi = _influence(y[rows], champion[rows], challenger[rows])
        return float(np.sqrt(np.sum(np.bincount(cluster[rows], weights=psi) ** 2) / np.sum(psi**2)))

    everything = np.ones(len(y), dtype=bool)
    plain = float(np.sqrt(np.sum(_influence(y, champion, challenger) ** 2)))
    figures = {
        "weeks": float(len(repeat_share_by_week)),
        "approved purchases per week": len(frame) / len(repeat_share_by_week),
        "share of a week's purchases by a customer with another that week": float(repeat_share_by_week.mean()),
        "share of the period's purchases by a customer with another in it": float(
            per_period[per_period > 1].sum() / len(frame)
        ),
        "purchases per customer in the period": float(per_period.mean()),
        "clustered / plain SE, one week (mean over weeks)": float(
            np.mean([clustered_over_plain(week == w) for w in np.unique(week)])
        ),
        "clustered / plain SE, the period pooled": clustered_over_plain(everything),
        "plain SE / DeLong SE": plain / delong_test(y, challenger, champion).se,
    }
    print(_rounded(figures, 3))
    # The projection's plain variance is DeLong's (which divides by n − 1 where this divides by n).
    assert figures["plain SE / DeLong SE"] == pytest.approx(1.0, abs=1e-3)
    assert [round(v, 3) for v in figures.values()] == pytest.approx(
        [13, 8787.692, 0.426, 0.954, 4.625, 1.020, 1.094, 1.0], abs=0.005
    )
