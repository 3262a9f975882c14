"""The AUC-drop and default-rise alerts on simulated worlds whose truth is known: silent while the world is stable,
firing within three weeks of a change that matters. The README quotes these figures.

A scorecard champion is trained on the first 12 weeks of a 40-week world (300,000 purchases, ~200 defaults a week
among the approved) and decides the rest at the conservative cut-offs (approve below 0.25, refer below 0.5). Its
first 4 evaluated weeks (12–15) are its baseline; weeks 16–31 are stable (16 weeks); the change starts in week 32:

* ``concept_shock`` — defaults rise in one segment (under 30, on the app) while the features stay as they were;
* a broken feature feed — from week 32 the customer-history features (outstanding balance, late payments, defaults)
  arrive as zeros at scoring time (a serving fault, in the scenario-free world).

The fast tests compute the weekly figures from the scored rows directly (the final label: the simulator's truth);
the last one runs the real pipeline — prediction_logs and outcomes in DuckDB, ``join_ground_truth``,
``weekly_performance`` week by week with both labels, the ``alerts`` table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shadowgate.config import DriftScenario, EvaluationSettings, GroundTruthSettings
from shadowgate.evaluation.monitoring import WeekFigures, auc_drop, baseline, default_rise
from shadowgate.evaluation.performance import model_performance
from shadowgate.features import FEATURE_NAMES, features_frame
from shadowgate.simulation import SimulationResult
from shadowgate.training.train import ModelKind, build_estimator

START = dt.date(2026, 1, 5)  # the simulator's default first day, a Monday
WEEKS = 40
TRAIN_WEEKS, BASELINE_WEEKS, CHANGE_WEEK = 12, 4, 32
FIRST_CHECKED = TRAIN_WEEKS + BASELINE_WEEKS
MEDIUM, HIGH = 0.25, 0.5
SIZE = {"transactions": 300_000, "customers": 30_000, "days": WEEKS * 7, "drift_start_day": CHANGE_WEEK * 7}
HISTORY = ("outstanding_balance", "prior_late_payments", "prior_defaults")


@dataclass(frozen=True)
class Scored:
    """A world's purchases with the champion's scores (as served) and the truth."""

    week: np.ndarray
    score: np.ndarray
    decision: np.ndarray
    y: np.ndarray


def _scored(world: SimulationResult, *, broken_from_week: int | None = None) -> Scored:
    days = (world.transactions["event_timestamp"] - pd.Timestamp(START, tz="UTC")).dt.days.to_numpy()
    week = days // 7
    y = world.labels["is_default"].to_numpy(dtype=np.int64)
    x = pd.DataFrame(features_frame(world.transactions), columns=list(FEATURE_NAMES))
    model = build_estimator(ModelKind.SCORECARD, seed=11).fit(x[week < TRAIN_WEEKS], y[week < TRAIN_WEEKS])
    score = model.predict_proba(x)[:, 1]
    if broken_from_week is not None:
        served = world.transactions.copy()
        broken = week >= broken_from_week
        served.loc[broken, list(HISTORY)] = 0
        zeroed = pd.DataFrame(features_frame(served.loc[broken]), columns=list(FEATURE_NAMES))
        score[broken] = model.predict_proba(zeroed)[:, 1]
    decision = np.where(score < MEDIUM, "approve", np.where(score < HIGH, "manual_review", "deny"))
    return Scored(week=week, score=score, decision=decision, y=y)


def _alerted_weeks(scored: Scored) -> dict[str, list[int]]:
    """Weeks in which each check fires, on the approved purchases' final label, with the default settings."""
    settings = EvaluationSettings()
    figures = {}
    for k in range(TRAIN_WEEKS, WEEKS):
        rows = (scored.week == k) & (scored.decision == "approve")
        figures[k] = WeekFigures.of(model_performance(scored.y[rows], scored.score[rows]))
    base = baseline([figures[k] for k in range(TRAIN_WEEKS, FIRST_CHECKED)])
    assert base is not None
    fired: dict[str, list[int]] = {"auc_drop": [], "default_rise": []}
    for k in range(FIRST_CHECKED, WEEKS):
        drop = auc_drop(figures[k], base, relative=settings.auc_drop_alert, min_z=settings.alert_min_z)
        rise = default_rise(figures[k], base, relative=settings.default_rise_alert, min_z=settings.alert_min_z)
        print(k, f"AUC {drop.value:.4f} ({-drop.change:+.1%}, z {drop.z:.1f})" if drop else "",
              f"O/E {rise.value:.3f} ({rise.change:+.1%}, z {rise.z:.1f})" if rise else "")  # fmt: skip
        if drop is not None and drop.fires:
            fired["auc_drop"].append(k)
        if rise is not None and rise.fires:
            fired["default_rise"].append(k)
    return fired


@pytest.fixture(scope="module")
def shocked(world: Callable[..., SimulationResult]) -> SimulationResult:
    return world(**SIZE, scenario=DriftScenario.CONCEPT_SHOCK)


@pytest.fixture(scope="module")
def stable(world: Callable[..., SimulationResult]) -> SimulationResult:
    return world(**SIZE, scenario=DriftScenario.NONE)


def test_a_concept_shock_is_silent_before_and_raises_the_default_alert_at_once(shocked: SimulationResult) -> None:
    fired = _alerted_weeks(_scored(shocked))
    # 16 stable weeks after the baseline: silent. The shock raises the default rate (O/E +30 % or so) at once …
    assert fired["default_rise"] and fired["default_rise"][0] == CHANGE_WEEK
    assert all(k >= CHANGE_WEEK for k in fired["default_rise"])
    # … and leaves the ranking of the approved as it was: the AUC-drop alert rightly stays silent throughout.
    assert fired["auc_drop"] == []


def test_a_broken_feature_feed_raises_the_auc_alert_within_three_weeks_after_sixteen_silent_ones(
    stable: SimulationResult,
) -> None:
    fired = _alerted_weeks(_scored(stable, broken_from_week=CHANGE_WEEK))
    assert fired["auc_drop"] and CHANGE_WEEK <= fired["auc_drop"][0] < CHANGE_WEEK + 3
    assert all(k >= CHANGE_WEEK for k in fired["auc_drop"] + fired["default_rise"])


def test_a_stable_world_stays_silent_for_twenty_four_weeks(stable: SimulationResult) -> None:
    assert _alerted_weeks(_scored(stable)) == {"auc_drop": [], "default_rise": []}


# ------------------------------------------------------------------------------------------------ the real pipeline


def test_through_the_pipeline_the_shock_is_sent_once_and_every_week_carries_its_selection(
    shocked: SimulationResult, tmp_path: Path
) -> None:
    from shadowgate.decisioning.policies import Thresholds
    from shadowgate.pipelines.alerts import Alert
    from shadowgate.pipelines.ground_truth import join_ground_truth
    from shadowgate.pipelines.performance import EvaluationPlan, cohort_week, weekly_performance
    from shadowgate.storage.duckdb import DuckDBWarehouse
    from shadowgate.storage.warehouse import default_sql_dir
    from tests.warehouse_rows import load, simulated_outcomes, simulated_prediction_logs

    last = CHANGE_WEEK + 3  # the weeks evaluated: TRAIN_WEEKS … last − 1
    scored = _scored(shocked)
    keep = (scored.week >= TRAIN_WEEKS) & (scored.week < last)
    transactions = shocked.transactions.loc[keep].reset_index(drop=True)
    champion = scored.score[keep]
    # A shadow challenger: the champion's ranking with a little noise (enough to be compared, cheap to make).
    logit = np.log(champion / (1 - champion))
    challenger = 1 / (1 + np.exp(-(logit + np.random.default_rng(4).normal(scale=0.3, size=logit.size))))
    decisions = scored.decision[keep]
    granted = set(transactions.loc[decisions != "deny", "transaction_id"])
    outcomes = shocked.outcomes[shocked.outcomes["transaction_id"].isin(granted)].reset_index(drop=True)
    ground_truth = GroundTruthSettings()
    with DuckDBWarehouse(tmp_path / "warehouse.duckdb", sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()
        rows = simulated_prediction_logs(transactions, decisions, champion, shadow={"challenger": ("2", challenger)})
        load(warehouse, "prediction_logs", rows)
        load(warehouse, "outcomes", simulated_outcomes(outcomes))
        # Labels are versions stamped with the run that wrote them (a weekly run as of T reads those known at T), so
        # each weekly run below is preceded by a join run as of the same instant, as the daily runs would have been.
        labelled = 0

        plan = EvaluationPlan(
            settings=EvaluationSettings(bootstrap_resamples=20),
            early_maturity_days=ground_truth.early_maturity_days,
            maturity_days=ground_truth.maturity_days,
        )
        sent: list[Alert] = []
        by_week: dict[tuple[int, str], list[str]] = {}
        selection = {}
        for k in range(TRAIN_WEEKS, last):
            start = START + dt.timedelta(weeks=k)
            for label, days in (("early", plan.early_maturity_days), ("final", plan.maturity_days)):
                # The weekly run at which this week's label matured: a Monday, its interval end.
                as_of = dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC) + dt.timedelta(days=7 + days)
                as_of += dt.timedelta(days=(7 - as_of.weekday()) % 7)
                joined = join_ground_truth(
                    warehouse,
                    interval_start=as_of - dt.timedelta(days=1),
                    interval_end=as_of,
                    settings=ground_truth,
                    relabel_days=14,  # the labels of the week matured within the fortnight before this Monday
                )
                assert not joined.held_back
                labelled += joined.labeled
                summary = weekly_performance(
                    warehouse,
                    None,
                    as_of=as_of,
                    plan=plan,
                    policies={"conservative": Thresholds(high=HIGH, medium=MEDIUM)},
                    weeks=[cohort_week(start, label, as_of=as_of)],  # type: ignore[arg-type]
                    alert=sent.append,
                )
                by_week[k, label] = [a for a in summary.alerts if "own baseline" in a]
                selection[k] = summary.weeks[0]["selection"]
        stored = warehouse.query(
            """SELECT kind, subject, condition, severity, times_raised, first_raised_at
               FROM shadowgate.alerts WHERE kind IN ('auc_drop', 'default_rise') ORDER BY condition"""
        ).to_pylist()
        rate = warehouse.query(
            """SELECT DISTINCT value FROM shadowgate.model_metrics WHERE metric = 'cohort_approval_rate'
               AND population = 'all_decisions' AND cohort_start = DATE '2026-05-04' AND model = 'champion@1'"""
        ).to_pylist()

    assert labelled >= 2 * int(np.sum(decisions == "approve"))  # every approved decision, on both labels at least
    # Silent through the 16 stable weeks after the baseline, on both labels.
    assert [key for key, held in by_week.items() if held and key[0] < CHANGE_WEEK] == []
    final = [a for a in sent if a.kind in ("auc_drop", "default_rise") and a.condition == "final label"]
    # Week 32 (2026-08-17, ISO week 34): at once, and once for each model (the challenger shares the champion's
    # ranking, so its predictions fall short of the new defaults as much).
    assert [(a.kind, a.subject, a.severity, a.details["cohort"]) for a in final] == [
        ("default_rise", "champion@1", "error", "2026-W34"),
        ("default_rise", "challenger@2", "error", "2026-W34"),
    ]
    assert all(a.severity == "warning" for a in sent if a.condition == "early label")
    rows = sorted((r["subject"], r["kind"], r["times_raised"]) for r in stored if r["condition"] == "final label")
    assert rows == [("challenger@2", "default_rise", 1), ("champion@1", "default_rise", 1)]
    # The selection of each week: every decision counted, next to every figure.
    week_18 = (scored.week == 17) & keep  # 2026-05-04 is week 17
    assert selection[17]["decisions"] == int(week_18.sum())
    assert selection[17]["denied"] == int(np.sum(scored.decision[week_18] == "deny"))
    assert rate == [{"value": pytest.approx(np.mean(scored.decision[week_18] == "approve"))}]
