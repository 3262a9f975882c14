"""The one sentence a comparison run says (MLflow description, report head): who is ahead by how much with its
interval, the plan's look and information, and what happens next — for every verdict."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import replace

import pytest

from shadowgate.pipelines.performance import Comparison, cohort_week, verdict_sentence

WEEK = cohort_week(dt.date(2026, 8, 31), "final", as_of=dt.datetime(2026, 12, 7, tzinfo=dt.UTC))
BASE = Comparison(
    experiment_id="shadow-challenger",
    control="champion@1",
    treatment="challenger@2",
    n=9000,
    n_positive=130,
    auc_control=0.77,
    auc_treatment=0.79,
    auc_difference=0.02,
    delong_z=1.4,
    delong_p_value=0.16,
    auc_difference_ci=(-0.008, 0.048),
    brier_difference=-0.0001,
    brier_difference_ci=(-0.001, 0.001),
    mcnemar_statistic=1.0,
    mcnemar_p_value=0.3,
    decisions_disagree=40,
    auc_difference_se=0.0143,
    look=9,
    information=45_000.0,
    information_fraction=0.47,
    sequential_estimate=0.0205,
    sequential_se=0.0047,
    sequential_z=2.23,
    efficacy_bound=3.11,
    futility_bound=0.45,
    verdict="continue",
    margin=0.01,
)


def test_continue_says_who_leads_by_how_much_the_look_and_keep_collecting() -> None:
    sentence = verdict_sentence(BASE, WEEK)
    assert sentence == (
        "challenger@2 is ahead of champion@1 by 0.0205 AUC (95 % interval +0.0113 to +0.0297) over 9 weeks of the"
        " final label (to 2026-W36); look 9 of the plan, 47% of its information: not yet shown to beat it by the"
        " margin 0.01 (z = 2.23; superior at z ≥ 3.11, futile below 0.45) — keep collecting."
    )


@pytest.mark.parametrize(
    ("verdict", "z", "expected"),
    [
        ("superior", 3.4, "SUPERIOR — it beats champion@1 by more than the margin 0.01 (z = 3.40 ≥ 3.11); the plan"
         " has ended: it may be promoted."),
        ("futile", 0.2, "FUTILE — it will not be shown to beat champion@1 by the margin 0.01 (z = 0.20 < 0.45);"
         " the plan has ended: retire it."),
        ("not_shown", 1.7, "NOT SHOWN — the plan reached its last look without showing that it beats champion@1 by"
         " the margin 0.01 (z = 1.70); retire it."),
    ],
)  # fmt: skip
def test_each_final_verdict_names_itself_and_its_next_step(verdict: str, z: float, expected: str) -> None:
    sentence = verdict_sentence(replace(BASE, verdict=verdict, sequential_z=z, crossed=True), WEEK)
    assert sentence.endswith(expected)
    assert sentence.startswith("challenger@2 is ahead of champion@1 by 0.0205 AUC (95 % interval")


def test_behind_a_later_week_after_the_end_and_monitoring_read_as_such() -> None:
    behind = verdict_sentence(replace(BASE, sequential_estimate=-0.003), WEEK)
    assert behind.startswith("challenger@2 is behind champion@1 by 0.0030 AUC (95 % interval -0.0122 to +0.0062)")
    ended = verdict_sentence(replace(BASE, verdict="superior", plan_ended=True), WEEK)
    assert ended.endswith(
        "the plan ended at look 9 with the verdict SUPERIOR — later weeks are not looks; it may be promoted."
    )
    early = cohort_week(dt.date(2026, 8, 31), "early", as_of=dt.datetime(2026, 10, 1, tzinfo=dt.UTC))
    monitoring = verdict_sentence(replace(BASE, verdict="monitoring"), early)
    assert monitoring.endswith("of the early label (to 2026-W36); shown for monitoring only: the plan decides on"
                               " the final label.")  # fmt: skip


def test_no_look_this_week_shows_this_weeks_difference_and_keep_collecting() -> None:
    sentence = verdict_sentence(replace(BASE, look=0, sequential_estimate=math.nan), WEEK)
    assert sentence == (
        "challenger@2 is ahead of champion@1 by 0.0200 AUC (95 % interval -0.0080 to +0.0480) on the final label of"
        " 2026-W36; no look of the plan this week (no usable standard error) — keep collecting."
    )
