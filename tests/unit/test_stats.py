"""Paired statistics against published values, reference software, brute force and simulation.

Reference software values were computed offline with Debian bookworm's R packages r-cran-proc 1.18.0 (pROC) and
r-cran-rpact 3.3.4 (rpact); the calls are quoted next to each number.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from statsmodels.stats.multitest import multipletests

from shadowgate.evaluation.stats import (
    auc_sample_size,
    delong_covariance,
    delong_test,
    group_sequential_bounds,
    hanley_mcneil_se,
    holm,
    mcnemar_test,
    paired_bootstrap_ci,
    srm_test,
    two_proportion_test,
)


def _marker_and_grade() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded stand-in for a diagnostic-marker study: 150 cases (60 positive), a continuous marker with ties
    (rounded to 0.01, 46 distinct values) and an ordinal grade 1-5 (heavy ties). Exported to CSV, pROC computed the
    reference values below from exactly these numbers."""
    rng = np.random.default_rng(20261129)
    n = 150
    y = (rng.random(n) < 0.35).astype(int)
    latent = rng.normal(size=n) + 1.0 * y
    marker = np.round(np.exp(0.6 * latent - 2.0), 2)
    grade = np.clip(np.round(1.5 * (latent + 0.4 * rng.normal(size=n)) + 2.5), 1, 5)
    assert (len(y), int(y.sum()), len(set(marker)), sorted(set(grade))) == (150, 60, 46, [1.0, 2.0, 3.0, 4.0, 5.0])
    return y, marker, grade


# ---------------------------------------------------------------------------------------------------------- DeLong


def test_delong_matches_proc_roc_test() -> None:
    # pROC 1.18.0 on the CSV of _marker_and_grade(): r1 <- roc(y, marker, levels=c(0,1), direction="<");
    # r2 <- roc(y, grade, ...); t <- roc.test(r1, r2, method="delong"); printed with %.15g: auc(r1), auc(r2),
    # t$statistic, t$p.value, t$conf.int, var(r1), var(r2), cov(r1, r2).
    y, marker, grade = _marker_and_grade()
    result = delong_test(y, marker, grade)
    assert result.auc_a == pytest.approx(0.747962962962963, rel=1e-12)
    assert result.auc_b == pytest.approx(0.732314814814815, rel=1e-12)
    assert result.difference == pytest.approx(0.747962962962963 - 0.732314814814815, rel=1e-9)
    assert result.z == pytest.approx(0.88513708898724, rel=1e-9)
    assert result.p_value == pytest.approx(0.376082697883559, rel=1e-9)
    assert result.ci == pytest.approx((-0.0190016334243419, 0.0502979297206383), rel=1e-9)
    cov = delong_covariance(y, [marker, grade]).covariance
    assert cov[0, 0] == pytest.approx(0.00157198561564732, rel=1e-9)
    assert cov[1, 1] == pytest.approx(0.00162196442626775, rel=1e-9)
    assert cov[0, 1] == pytest.approx(0.0014407053042872, rel=1e-9)


@st.composite
def _paired_sample(draw: st.DrawFn, models: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes with at least two rows of each class and integer-valued scores (many ties) for several models."""
    n_pos = draw(st.integers(2, 15))
    n_neg = draw(st.integers(2, 25))
    y = np.array([1] * n_pos + [0] * n_neg)
    y = y[draw(st.permutations(range(len(y))))]
    scores = np.array(
        [draw(st.lists(st.integers(0, 6), min_size=len(y), max_size=len(y))) for _ in range(models)], dtype=float
    )
    return y, scores


def _structural_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. (1988) by definition, O(n²): ψ over every (default, repaid) pair, ties ½."""
    aucs, v10, v01 = [], [], []
    for s in scores:
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        aucs.append(psi.mean())
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    s10, s01 = np.atleast_2d(np.cov(np.array(v10))), np.atleast_2d(np.cov(np.array(v01)))
    return np.array(aucs), s10 / (y == 1).sum() + s01 / (y == 0).sum()


@settings(max_examples=150, deadline=None)
@given(_paired_sample(models=3))
def test_delong_covariance_equals_the_quadratic_structural_components(sample: tuple[np.ndarray, np.ndarray]) -> None:
    y, scores = sample
    fast = delong_covariance(y, scores)
    aucs, covariance = _structural_components(y, scores)
    np.testing.assert_allclose(fast.aucs, aucs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.covariance, covariance, rtol=1e-9, atol=1e-15)


@settings(max_examples=100, deadline=None)
@given(_paired_sample(models=2), st.integers(0, 2**32 - 1))
def test_delong_with_a_given_sort_order_is_the_same_whatever_order_ties_come_in(
    sample: tuple[np.ndarray, np.ndarray], seed: int
) -> None:
    """The pipeline sorts each model's scores once and passes the order in: any ascending order (ties shuffled)
    gives the same AUCs and covariance as sorting inside, clustered or not."""
    y, scores = sample
    rng = np.random.default_rng(seed)
    clusters = rng.integers(0, max(2, len(y) // 2), len(y))
    clusters[:2] = [0, 1]
    shuffled = [np.lexsort((rng.random(len(row)), row)) for row in scores]  # ascending, ties in random order
    for c in (None, clusters):
        inside = delong_covariance(y, scores, clusters=c)
        given_order = delong_covariance(y, scores, clusters=c, ascending=shuffled)
        np.testing.assert_allclose(given_order.aucs, inside.aucs, rtol=0, atol=1e-12)
        np.testing.assert_allclose(given_order.covariance, inside.covariance, rtol=1e-9, atol=1e-15)


@settings(max_examples=150, deadline=None)
@given(_paired_sample())
def test_delong_auc_is_the_mann_whitney_u_with_ties(sample: tuple[np.ndarray, np.ndarray]) -> None:
    y, (a, b) = sample
    result = delong_test(y, a, b)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    u_a = sps.mannwhitneyu(a[y == 1], a[y == 0]).statistic
    u_b = sps.mannwhitneyu(b[y == 1], b[y == 0]).statistic
    assert result.auc_a == pytest.approx(u_a / (n_pos * n_neg), abs=1e-12)
    assert result.auc_b == pytest.approx(u_b / (n_pos * n_neg), abs=1e-12)
    swapped = delong_test(y, b, a)
    assert swapped.z == pytest.approx(-result.z) and swapped.p_value == pytest.approx(result.p_value)


def test_delong_identical_models_are_not_different() -> None:
    y, marker, _ = _marker_and_grade()
    result = delong_test(y, marker, marker.copy())
    assert (result.difference, result.z, result.p_value, result.ci) == (0.0, 0.0, 1.0, (0.0, 0.0))


def test_delong_perfect_against_reversed_ranking_is_certain() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    result = delong_test(y, np.arange(6.0), -np.arange(6.0))
    assert (result.auc_a, result.auc_b, result.z, result.p_value) == (1.0, 0.0, math.inf, 0.0)


@pytest.mark.parametrize(
    ("y", "a", "b", "message"),
    [
        ([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], "both outcomes"),
        ([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], "both outcomes"),
        ([0, 1, 0, 1], [0.1, 0.2, 0.3], [0.4, 0.3, 0.2, 0.1], "differ in length"),
        ([0, 1, 0, 1], [0.1, np.nan, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], "finite"),
        ([0, 1, 0, 2], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], "0/1"),
        ([0, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], "at least two"),
    ],
)
def test_delong_rejects_bad_input(y: list[int], a: list[float], b: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        delong_test(np.array(y), np.array(a), np.array(b))


# ---------------------------------------------------------------------------------------------- AUC sample sizes


@pytest.mark.parametrize(("n_pos", "n_neg"), [(1, 1), (10, 30), (41, 72), (500, 20_000)])
def test_hanley_mcneil_at_half_is_the_exact_mann_whitney_null_variance(n_pos: int, n_neg: int) -> None:
    # Mann & Whitney (1947): under the null Var(U) = n1·n0·(n1+n0+1)/12, so Var(AUC) = (n1+n0+1)/(12·n1·n0);
    # Hanley & McNeil's Q1 = Q2 = 1/3 at A = ½ reproduce it exactly.
    assert hanley_mcneil_se(0.5, n_pos=n_pos, n_neg=n_neg) == pytest.approx(
        math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg)), rel=1e-12
    )


def test_hanley_mcneil_matches_simulation_under_exponential_scores() -> None:
    # With exponential scores in both classes Q1 = A/(2-A) and Q2 = 2A²/(1+A) hold exactly (Hanley & McNeil 1982),
    # so the formula is the exact standard deviation of the empirical AUC. Repaid ~ Exp(1), defaults ~ Exp(rate
    # (1-A)/A) give P(default > repaid) = A.
    auc, n_pos, n_neg, reps = 0.75, 15, 25, 20_000
    rng = np.random.default_rng(11)
    pos = rng.exponential(auc / (1 - auc), size=(reps, n_pos))
    neg = rng.exponential(1.0, size=(reps, n_neg))
    aucs = (pos[:, :, None] > neg[:, None, :]).mean(axis=(1, 2))
    assert aucs.mean() == pytest.approx(auc, abs=0.003)
    # The sample SD of 20,000 draws is within ~0.5 % of the truth.
    assert aucs.std(ddof=1) == pytest.approx(hanley_mcneil_se(auc, n_pos=n_pos, n_neg=n_neg), rel=0.02)


def test_hanley_mcneil_edges_and_errors() -> None:
    assert hanley_mcneil_se(1.0, n_pos=10, n_neg=10) == 0.0
    with pytest.raises(ValueError, match="auc"):
        hanley_mcneil_se(1.2, n_pos=10, n_neg=10)
    with pytest.raises(ValueError, match="at least 1"):
        hanley_mcneil_se(0.7, n_pos=0, n_neg=10)


@pytest.mark.parametrize(
    ("auc", "ratio", "one_sided", "power", "proc_ncases"),
    [
        # pROC 1.18.0: power.roc.test(auc=, sig.level=0.05, power=, kappa=ratio, alternative=)$ncases, which is
        # Obuchowski, Lieber & Wians (2004) with a = 1.414·Φ⁻¹(A); we use √2, a relative difference below 1e-4.
        (0.7, 1, True, 0.8, 23.7789750136),
        (0.7, 2, True, 0.8, 18.0555595036),
        (0.7, 10, True, 0.8, 13.473338957),
        (0.8, 1, True, 0.8, 9.93371154666),
        (0.8, 2, True, 0.8, 7.62468884386),
        (0.8, 10, True, 0.8, 5.77202529094),
        (0.9, 1, True, 0.8, 4.78309605712),
        (0.9, 2, True, 0.8, 3.69564531442),
        (0.9, 10, True, 0.8, 2.82019959667),
        (0.8, 1, False, 0.9, 16.6191992021),
    ],
)
def test_auc_sample_size_matches_proc_power_roc_test(
    auc: float, ratio: float, one_sided: bool, power: float, proc_ncases: float
) -> None:
    assert auc_sample_size(auc, ratio=ratio, one_sided=one_sided, power=power) == math.ceil(proc_ncases)


@pytest.mark.parametrize(("auc", "ratio"), [(0.6, 1.0), (0.65, 2.0)])
def test_auc_sample_size_delivers_its_power_in_simulation(auc: float, ratio: float) -> None:
    # Binormal scores with equal variances (the model behind Obuchowski's variance function): AUC = Φ(μ/√2). With
    # the returned number of defaults, the one-sided 5 % Mann-Whitney test of AUC = ½ should reject ~80 % of the time.
    n_pos = auc_sample_size(auc, ratio=ratio)
    n_neg = int(ratio * n_pos)
    rng = np.random.default_rng(5)
    reps = 10_000
    mu = math.sqrt(2.0) * sps.norm.ppf(auc)
    ranks = sps.rankdata(np.hstack([rng.normal(mu, 1, (reps, n_pos)), rng.normal(0, 1, (reps, n_neg))]), axis=1)
    aucs = (ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    null_sd = math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))
    power = ((aucs - 0.5) / null_sd > sps.norm.isf(0.05)).mean()
    assert power == pytest.approx(0.8, abs=0.03)


def test_auc_sample_size_responds_to_its_inputs() -> None:
    base = auc_sample_size(0.75)
    assert auc_sample_size(0.75, power=0.9) > base
    assert auc_sample_size(0.75, one_sided=False) > base
    assert auc_sample_size(0.85) < base
    assert auc_sample_size(0.75, ratio=19.0) < base  # more repaid rows per default: fewer defaults needed
    assert auc_sample_size(0.8, auc_null=0.75) > auc_sample_size(0.8)
    with pytest.raises(ValueError, match="differ"):
        auc_sample_size(0.5)
    with pytest.raises(ValueError, match="ratio"):
        auc_sample_size(0.7, ratio=0)


# ------------------------------------------------------------------------------------------------------------- SRM


def test_srm_wikipedia_example() -> None:
    # Wikipedia, "Sample ratio mismatch": 1000 users split 50/50, observed 600 and 400 → p = 2.54 × 10⁻¹⁰.
    result = srm_test([600, 400], [0.5, 0.5])
    assert result.statistic == pytest.approx(40.0)
    assert result.p_value == pytest.approx(2.54e-10, rel=5e-3)
    assert result.flagged


def test_srm_three_groups_hand_computed() -> None:
    # 50/25/25 plan, 10,000 rows: expected 5000/2500/2500; χ² = 100²/5000 + 100²/2500 + 0 = 6 on 2 degrees of
    # freedom, whose survival function is exp(-x/2): p = e⁻³ ≈ 0.0498.
    result = srm_test([5100, 2400, 2500], [0.5, 0.25, 0.25])
    assert result.statistic == pytest.approx(6.0)
    assert result.p_value == pytest.approx(math.exp(-3.0), rel=1e-9)
    assert not result.flagged
    assert srm_test([5100, 2400, 2500], [0.5, 0.25, 0.25], threshold=0.05).flagged


def test_srm_exact_split_is_clean() -> None:
    result = srm_test([900, 100], [0.9, 0.1])
    assert (result.statistic, result.p_value, result.flagged) == (0.0, 1.0, False)


@pytest.mark.parametrize(
    ("counts", "shares", "message"),
    [
        ([10, 10], [0.6, 0.6], "sum to 1"),
        ([10, 10], [1.0, 0.0], "positive"),
        ([10, 10, 5], [0.5, 0.5], "equal length"),
        ([10, -1], [0.5, 0.5], "non-negative"),
        ([0, 0], [0.5, 0.5], "no rows"),
    ],
)
def test_srm_rejects_bad_input(counts: list[int], shares: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        srm_test(counts, shares)


# --------------------------------------------------------------------------------------------------------- McNemar


def test_mcnemar_agresti_presidential_approval() -> None:
    # Agresti, "An Introduction to Categorical Data Analysis" (2nd ed., Table 8.1): approval of the president in two
    # surveys of the same 1600 people, [[794, 150], [86, 570]]; Agresti reports z² = (86-150)²/236 = 17.36 without
    # continuity correction. With 236 discordant pairs the corrected chi-square (|b-c|-1)²/(b+c) is used.
    table = [[794, 150], [86, 570]]
    assert math.isclose((150 - 86) ** 2 / 236, 17.36, abs_tol=0.005)
    result = mcnemar_test(table)
    assert result.statistic == pytest.approx(63**2 / 236, rel=1e-12)
    assert result.p_value == pytest.approx(sps.chi2.sf(63**2 / 236, 1), rel=1e-9)


def test_mcnemar_small_discordant_count_is_exact() -> None:
    # 3 + 9 = 12 discordant pairs: two-sided exact binomial p = 2·P(X ≤ 3 | n=12, ½) = 2·(1+12+66+220)/4096.
    result = mcnemar_test([[40, 3], [9, 48]])
    assert result.p_value == pytest.approx(2 * 299 / 4096, rel=1e-12)
    assert result.statistic == 3


def test_mcnemar_switches_to_chi_square_at_25_discordant_pairs() -> None:
    exact = mcnemar_test([[100, 8], [16, 100]])  # 24 discordant
    assert exact.p_value == pytest.approx(2 * sps.binom.cdf(8, 24, 0.5), rel=1e-12)
    asymptotic = mcnemar_test([[100, 8], [17, 100]])  # 25 discordant
    assert asymptotic.statistic == pytest.approx((17 - 8 - 1) ** 2 / 25, rel=1e-12)


def test_mcnemar_without_discordant_pairs_and_bad_tables() -> None:
    assert mcnemar_test([[10, 0], [0, 7]]).p_value == 1.0
    with pytest.raises(ValueError, match="2×2"):
        mcnemar_test([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(ValueError, match="whole counts"):
        mcnemar_test([[1, -2], [3, 4]])


# ------------------------------------------------------------------------------------------------------------ Holm


def _holm_by_hand(p: list[float]) -> list[float]:
    """Holm (1979) step-down: the i-th smallest p times (m - i), made monotone by a running maximum, capped at 1."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def test_holm_hand_example() -> None:
    # Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → raised to the running maximum 0.06.
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], rtol=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12))
def test_holm_matches_the_step_down_loop(p: list[float]) -> None:
    adjusted = holm(p)
    np.testing.assert_allclose(adjusted, _holm_by_hand(p), rtol=1e-12, atol=1e-15)
    assert (adjusted >= np.array(p) - 1e-15).all() and (adjusted <= 1.0).all()
    by_raw = adjusted[np.argsort(p, kind="stable")]
    assert (np.diff(by_raw) >= -1e-15).all()


@pytest.mark.parametrize(
    "p", [[0.5], [0.001, 0.001, 0.2, 0.2, 0.04], [0.9, 0.3, 0.6, 0.012, 0.0], [0.02, 0.03, 0.04, 0.05, 0.06, 0.5]]
)
def test_holm_agrees_with_statsmodels(p: list[float]) -> None:
    # A handful of cases only: statsmodels' Holm runs gc.collect() per call, slow inside a test session.
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], rtol=1e-12, atol=1e-15)


def test_holm_input_checks() -> None:
    assert len(holm([])) == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, float("nan")])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.5])


# ---------------------------------------------------------------------------------------------- sequential bounds


@pytest.mark.parametrize(
    ("fractions", "alpha", "spending", "rpact"),
    [
        # rpact 3.3.4: getDesignGroupSequential(kMax=, alpha=, sided=1, typeOfDesign="asOF"/"asP",
        # informationRates=)$criticalValues. The first two rows are the textbook designs with five equally spaced
        # looks at one-sided 2.5 %: Lan-DeMets O'Brien-Fleming 4.877 3.357 2.680 2.290 2.031, Pocock type
        # 2.438 2.427 2.410 2.397 2.386.
        (
            [0.2, 0.4, 0.6, 0.8, 1.0],
            0.025,
            "obrien_fleming",
            [4.87688494879, 3.3570119217, 2.68028006703, 2.28981677443, 2.03103206307],
        ),
        (
            [0.2, 0.4, 0.6, 0.8, 1.0],
            0.025,
            "pocock",
            [2.43797668805, 2.42681386322, 2.4101941362, 2.3966492936, 2.38599970192],
        ),
        ([0.15, 0.45, 0.7, 1.0], 0.025, "obrien_fleming", [5.66966960169, 3.14377778023, 2.45153259486, 2.00108823925]),
        ([0.15, 0.45, 0.7, 1.0], 0.025, "pocock", [2.52816903428, 2.33572345227, 2.35792242736, 2.32482498139]),
        ([0.3, 0.6, 0.9], 0.05, "obrien_fleming", [3.39295135467, 2.28085186332, 1.80729109794]),
        ([0.3, 0.6, 0.9], 0.05, "pocock", [2.03776418047, 2.02366312593, 2.00635527819]),
    ],
)
def test_sequential_bounds_match_rpact(fractions: list[float], alpha: float, spending: str, rpact: list[float]) -> None:
    bounds = group_sequential_bounds(fractions, alpha=alpha, spending=spending)  # type: ignore[arg-type]
    np.testing.assert_allclose(bounds.boundaries, rpact, rtol=0, atol=1e-6)
    assert bounds.information_fractions == tuple(fractions)


def test_sequential_single_look_is_the_fixed_sample_test() -> None:
    for spending in ("obrien_fleming", "pocock"):
        bounds = group_sequential_bounds([1.0], alpha=0.025, spending=spending)
        assert bounds.boundaries[0] == pytest.approx(sps.norm.isf(0.025), abs=1e-12)
        assert bounds.cumulative_alpha[0] == pytest.approx(0.025, rel=1e-12)


def test_sequential_spending_functions() -> None:
    t = [0.25, 0.5, 1.0]
    obf = group_sequential_bounds(t, alpha=0.025).cumulative_alpha
    assert obf == pytest.approx([2 * sps.norm.sf(sps.norm.isf(0.0125) / math.sqrt(x)) for x in t], rel=1e-12)
    pocock = group_sequential_bounds(t, alpha=0.025, spending="pocock").cumulative_alpha
    assert pocock == pytest.approx([0.025 * math.log(1 + (math.e - 1) * x) for x in t], rel=1e-12)
    assert obf[-1] == pytest.approx(0.025) and pocock[-1] == pytest.approx(0.025)


def _look_correlation(t: list[float]) -> np.ndarray:
    ti, tj = np.meshgrid(t, t, indexing="ij")
    return np.sqrt(np.minimum(ti, tj) / np.maximum(ti, tj))


@pytest.mark.parametrize(
    ("t", "spending"),
    [
        ([0.2, 0.35, 0.6, 1.0], "obrien_fleming"),
        ([0.2, 0.35, 0.6, 1.0], "pocock"),
        # Two looks 1 % of the information apart: rpact 3.3.4 gives 2.052167 for the last boundary, which spends
        # 0.0250052 by this integration; ours (2.052566) spends 0.0250000.
        ([0.5, 0.99, 1.0], "obrien_fleming"),
    ],
)
def test_sequential_bounds_spend_alpha_by_genz_integration(t: list[float], spending: str) -> None:
    # An independent integrator: scipy's multivariate normal CDF (Genz's quasi-Monte Carlo), seeded, 1e-7 error
    # target. P(some Z_j ≥ b_j, j ≤ k) = 1 - P(Z_1 < b_1, …, Z_k < b_k) must equal the spent alpha at every look.
    bounds = group_sequential_bounds(t, alpha=0.025, spending=spending)  # type: ignore[arg-type]
    corr = _look_correlation(t)
    for k in range(1, len(t) + 1):
        mvn = sps.multivariate_normal(mean=np.zeros(k), cov=corr[:k, :k], abseps=1e-7, releps=1e-7, maxpts=2_000_000)
        crossed = 1.0 - mvn.cdf(np.array(bounds.boundaries[:k]), rng=np.random.default_rng(k))
        assert crossed == pytest.approx(bounds.cumulative_alpha[k - 1], abs=2e-6)


def test_sequential_bounds_spend_alpha_in_brownian_motion_simulation() -> None:
    t = np.array([0.2, 0.4, 0.6, 0.8, 1.0])
    bounds = group_sequential_bounds(t, alpha=0.025)
    rng = np.random.default_rng(2024)
    paths = 400_000
    increments = rng.standard_normal((paths, len(t))) * np.sqrt(np.diff(t, prepend=0.0))
    z = np.cumsum(increments, axis=1) / np.sqrt(t)
    crossed_by = np.maximum.accumulate(z >= np.array(bounds.boundaries), axis=1).mean(axis=0)
    for simulated, spent in zip(crossed_by, bounds.cumulative_alpha, strict=True):
        # Four binomial standard errors of the simulated proportion.
        assert simulated == pytest.approx(spent, abs=4 * math.sqrt(spent * (1 - spent) / paths) + 1e-6)


def test_sequential_bounds_with_a_negligible_first_look() -> None:
    # O'Brien-Fleming spends ~1e-29 at 1 % information: a huge but finite first boundary, later ones unaffected.
    bounds = group_sequential_bounds([0.01, 0.5, 1.0], alpha=0.025)
    assert bounds.boundaries[0] > 10
    reference = group_sequential_bounds([0.5, 1.0], alpha=0.025)
    np.testing.assert_allclose(bounds.boundaries[1:], reference.boundaries, atol=1e-6)


@pytest.mark.parametrize(
    ("fractions", "spending", "message"),
    [
        ([0.5, 0.5, 1.0], "pocock", "increase strictly"),
        ([0.0, 1.0], "pocock", "increase strictly"),
        ([0.5, 1.2], "pocock", "increase strictly"),
        ([], "pocock", "non-empty"),
        ([0.5, 1.0], "haybittle", "unknown spending"),
        ([0.5, 0.50001, 1.0], "pocock", "too close"),
    ],
)
def test_sequential_bounds_reject_bad_input(fractions: list[float], spending: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        group_sequential_bounds(fractions, spending=spending)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ paired bootstrap


def _scored_book(n: int, seed: int, *, rho: float = 0.6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Defaults at ~10 %, two correlated binormal scores: a separates the classes by 1.2 SD, b by 0.8 SD."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(int)
    shared = rng.standard_normal(n)
    a = 1.2 * y + math.sqrt(rho) * shared + math.sqrt(1 - rho) * rng.standard_normal(n)
    b = 0.8 * y + math.sqrt(rho) * shared + math.sqrt(1 - rho) * rng.standard_normal(n)
    return y, sps.norm.cdf(a - 2.0), sps.norm.cdf(b - 2.0)


def test_bootstrap_named_metrics_equal_the_sklearn_callables_on_the_same_resamples() -> None:
    # The named metrics work on row counts; the callables on copied rows. Same seed, same rows, same answers —
    # with rounded scores so that the AUC's tie handling is exercised too.
    y, a, b = _scored_book(3000, seed=1)
    a = np.round(a, 2)

    def clipped_log_loss(yy: np.ndarray, p: np.ndarray) -> float:
        return float(log_loss(yy, np.clip(p, 1e-12, 1 - 1e-12)))

    for name, function in (("auc", roc_auc_score), ("brier", brier_score_loss), ("log_loss", clipped_log_loss)):
        fast = paired_bootstrap_ci(y, a, b, metric=name, n_resamples=60, seed=3)  # type: ignore[arg-type]
        slow = paired_bootstrap_ci(y, a, b, metric=function, n_resamples=60, seed=3)
        assert fast.estimate == pytest.approx(function(y, a) - function(y, b), rel=1e-10)
        assert fast.estimate == pytest.approx(slow.estimate, rel=1e-10)
        assert fast.ci == pytest.approx(slow.ci, rel=1e-9)
        assert fast.se == pytest.approx(slow.se, rel=1e-9)


def test_bootstrap_is_reproducible_with_its_seed() -> None:
    y, a, b = _scored_book(2000, seed=2)
    first = paired_bootstrap_ci(y, a, b, metric="auc", n_resamples=200, seed=7)
    assert paired_bootstrap_ci(y, a, b, metric="auc", n_resamples=200, seed=7) == first
    assert paired_bootstrap_ci(y, a, b, metric="auc", n_resamples=200, seed=8).ci != first.ci
    assert first.n_resamples == 200 and first.confidence == 0.95


def test_bootstrap_auc_spread_agrees_with_delong() -> None:
    # Two independent estimates of the same standard error: resampling and DeLong's asymptotic variance.
    y, a, b = _scored_book(5000, seed=4)
    boot = paired_bootstrap_ci(y, a, b, metric="auc", n_resamples=1000, seed=0)
    delong = delong_test(y, a, b)
    assert boot.estimate == pytest.approx(delong.difference, rel=1e-12)
    assert boot.se == pytest.approx(delong.se, rel=0.1)
    assert boot.ci == pytest.approx(delong.ci, abs=0.25 * delong.se)


def test_bootstrap_loss_spread_agrees_with_the_stratified_formula() -> None:
    # A mean loss difference resampled within classes has variance Σ_c n_c·Var_c(d) / n², d the per-row gap.
    y, a, b = _scored_book(5000, seed=5)
    boot = paired_bootstrap_ci(y, a, b, metric="brier", n_resamples=1000, seed=0)
    gap = (a - y) ** 2 - (b - y) ** 2
    variance = sum((y == c).sum() * gap[y == c].var() for c in (0, 1)) / len(y) ** 2
    assert boot.estimate == pytest.approx(gap.mean(), rel=1e-10)
    assert boot.se == pytest.approx(math.sqrt(variance), rel=0.1)


def test_bootstrap_interval_covers_the_true_auc_difference() -> None:
    # Binormal scores: AUC = Φ(separation/√2), so the true difference is known. 95 % intervals from 150 independent
    # books should cover it ~95 % of the time (binomial SD ≈ 1.8 points).
    truth = sps.norm.cdf(1.2 / math.sqrt(2)) - sps.norm.cdf(0.8 / math.sqrt(2))
    covered = 0
    for seed in range(150):
        y, a, b = _scored_book(600, seed=100 + seed)
        low, high = paired_bootstrap_ci(y, a, b, metric="auc", n_resamples=300, seed=seed).ci
        covered += low <= truth <= high
    assert 0.88 <= covered / 150 <= 0.99


def test_bootstrap_rejects_bad_input() -> None:
    y, a, b = _scored_book(200, seed=6)
    with pytest.raises(ValueError, match="unknown metric"):
        paired_bootstrap_ci(y, a, b, metric="gini")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap_ci(y, a, b, metric="auc", n_resamples=1)
    with pytest.raises(ValueError, match="both outcomes"):
        paired_bootstrap_ci(np.zeros(200), a, b, metric="auc")
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap_ci(y, a[:-1], b, metric="auc")


# ------------------------------------------------------------------------------------------------ two proportions


def test_two_proportion_newcombe_published_intervals() -> None:
    # Newcombe (1998, Stat Med 17:873, Table II, example (a)): 56/70 vs 48/80, method 10 (hybrid score) gives
    # 0.0524 to 0.3339.
    result = two_proportion_test(successes_a=56, n_a=70, successes_b=48, n_b=80)
    assert (result.rate_a, result.rate_b) == (0.8, 0.6)
    assert result.difference == pytest.approx(0.2)
    assert result.ci == pytest.approx((0.0524, 0.3339), abs=5e-5)
    # Fagerland, Lydersen & Laake (2015, SMMR 26:1, as quoted in statsmodels' tests): 7/34 vs 1/34, Newcombe's
    # hybrid score interval 0.019 to 0.34.
    small = two_proportion_test(successes_a=7, n_a=34, successes_b=1, n_b=34)
    assert small.ci == pytest.approx((0.019, 0.34), abs=0.005)


def test_two_proportion_z_is_the_uncorrected_chi_square() -> None:
    result = two_proportion_test(successes_a=120, n_a=2000, successes_b=90, n_b=2100)
    chi2, p, _, _ = sps.chi2_contingency([[120, 1880], [90, 2010]], correction=False)
    assert result.z**2 == pytest.approx(chi2, rel=1e-10)
    assert result.p_value == pytest.approx(p, rel=1e-10)
    pooled = 210 / 4100
    assert result.z == pytest.approx(
        (120 / 2000 - 90 / 2100) / math.sqrt(pooled * (1 - pooled) * (1 / 2000 + 1 / 2100))
    )


def test_two_proportion_degenerate_and_bad_counts() -> None:
    none = two_proportion_test(successes_a=0, n_a=500, successes_b=0, n_b=700)
    assert (none.z, none.p_value, none.difference) == (0.0, 1.0, 0.0)
    assert none.ci[0] < 0.0 < none.ci[1]
    with pytest.raises(ValueError, match="successes <= n"):
        two_proportion_test(successes_a=5, n_a=4, successes_b=1, n_b=10)


# ---------------------------------------------------------------------------------------- clustered (repeat customers)


def _paired_world(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-2.0 + 1.2 * risk)))).astype(int)
    return y, risk + rng.normal(scale=0.8, size=n), risk + rng.normal(scale=1.0, size=n)


def test_clustered_delong_with_one_row_per_cluster_is_delong() -> None:
    y, a, b = _paired_world(3_000, 1)
    plain = delong_test(y, a, b)
    clustered = delong_test(y, a, b, clusters=np.arange(y.size))
    assert clustered.difference == plain.difference
    # (n−1)/n factors apart: within a fraction of a percent at 3,000 rows.
    assert clustered.se == pytest.approx(plain.se, rel=2e-3)


def test_a_customer_counted_three_times_does_not_shrink_the_clustered_standard_error() -> None:
    # Each customer's purchase repeated three times (the extreme repeat customer: identical rows). Independent-row
    # DeLong believes it has three times the data (SE / √3); clustered by customer the SE stays the customers' SE.
    y, a, b = _paired_world(3_000, 2)
    once = delong_test(y, a, b)
    y3, a3, b3 = (np.repeat(v, 3) for v in (y, a, b))
    customers = np.repeat(np.arange(y.size), 3)
    naive = delong_test(y3, a3, b3)
    clustered = delong_test(y3, a3, b3, clusters=customers)
    assert naive.se == pytest.approx(once.se / math.sqrt(3), rel=0.01)
    assert clustered.se == pytest.approx(once.se, rel=0.01)
    assert clustered.difference == pytest.approx(once.difference)


def test_the_cluster_bootstrap_resamples_customers_not_purchases() -> None:
    y, a, b = _paired_world(2_000, 3)
    pa_, pb = 1 / (1 + np.exp(-(a - 2))), 1 / (1 + np.exp(-(b - 2)))
    once = paired_bootstrap_ci(y, pa_, pb, metric="brier", n_resamples=400, seed=5)
    y3, a3, b3 = (np.repeat(v, 3) for v in (y, pa_, pb))
    customers = np.repeat(np.arange(y.size), 3)
    naive = paired_bootstrap_ci(y3, a3, b3, metric="brier", n_resamples=400, seed=5)
    clustered = paired_bootstrap_ci(y3, a3, b3, metric="brier", n_resamples=400, seed=5, clusters=customers)
    assert clustered.estimate == pytest.approx(once.estimate)
    assert naive.se == pytest.approx(once.se / math.sqrt(3), rel=0.15)
    assert clustered.se == pytest.approx(once.se, rel=0.15)
    auc = paired_bootstrap_ci(y3, a3, b3, metric="auc", n_resamples=200, seed=5, clusters=customers)
    assert auc.se == pytest.approx(delong_test(y, pa_, pb).se, rel=0.2)
    with pytest.raises(ValueError, match="one label per row"):
        paired_bootstrap_ci(y, pa_, pb, metric="brier", clusters=customers)
