"""The label rules of join_ground_truth on a hand-built warehouse (DuckDB in memory): maturity boundaries to the
second, point in time, who is labelled, the report and the outcome-feed alert."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from shadowgate.config import GroundTruthSettings
from shadowgate.pipelines.ground_truth import (
    GroundTruthSummary,
    join_ground_truth,
    label_window,
    last_complete_day,
    weeks_to_reevaluate,
)
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import default_sql_dir
from tests.warehouse_rows import load, outcome_row, prediction_row

T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
"""Every purchase here is made at T0 (its early label matures on 2026-03-19 10:00, its final one on 2026-05-31)."""
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
SETTINGS = GroundTruthSettings(early_grace_hours=0)
"""The maturity boundaries to the second, without the early label's grace window (tested on its own below)."""


def _day(d: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The daily data interval holding instant ``d``."""
    start = d.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + DAY


EARLY_DAY = _day(T0 + 17 * DAY)
FINAL_DAY = _day(T0 + 90 * DAY)


RUN_DAYS = (EARLY_DAY, _day(T0 + 18 * DAY), _day(T0 + 19 * DAY), FINAL_DAY, _day(T0 + 91 * DAY))
"""The days the tests run; the rest of the book (purchases not logged here) reports a signal at noon on each."""


@pytest.fixture
def warehouse() -> Iterator[DuckDBWarehouse]:
    with DuckDBWarehouse(":memory:", sql_dir=default_sql_dir()) as w:
        w.ensure_tables()
        book = [
            outcome_row(f"tx_book_{k}", "instalment_paid", start + DAY / 2, 2) for k, (start, _) in enumerate(RUN_DAYS)
        ]
        load(w, "outcomes", book)
        yield w


def _run(
    warehouse: DuckDBWarehouse,
    interval: tuple[dt.datetime, dt.datetime],
    settings: GroundTruthSettings = SETTINGS,
    **kwargs: Any,
) -> GroundTruthSummary:
    start, end = interval
    return join_ground_truth(warehouse, interval_start=start, interval_end=end, settings=settings, **kwargs)


def _labels(warehouse: DuckDBWarehouse, as_of: dt.datetime | None = None) -> dict[str, dict[str, Any]]:
    """Each decision's latest label version (written by ``as_of``, when given)."""
    rows = warehouse.query(
        "SELECT * FROM shadowgate.labeled_predictions WHERE labeled_as_of <= $as_of"
        " QUALIFY ROW_NUMBER() OVER (PARTITION BY prediction_id ORDER BY labeled_as_of DESC) = 1"
        " ORDER BY transaction_id",
        {"as_of": as_of or dt.datetime.max.replace(tzinfo=dt.UTC)},
    ).to_pylist()
    return {r["transaction_id"]: r for r in rows}


def _versions(warehouse: DuckDBWarehouse) -> list[tuple[str, dt.datetime, bool, bool | None]]:
    """Every label version: (transaction, labeled_as_of, early, final), in order."""
    rows = warehouse.query(
        "SELECT transaction_id, labeled_as_of, early_defaulted, final_defaulted FROM shadowgate.labeled_predictions"
        " ORDER BY transaction_id, labeled_as_of"
    ).to_pylist()
    return [(r["transaction_id"], r["labeled_as_of"], r["early_defaulted"], r["final_defaulted"]) for r in rows]


def _tx(i: int) -> str:
    return f"tx_{i:07d}"


def test_instalment_2_late_known_on_day_17_is_an_early_default_on_day_18_it_is_not(
    warehouse: DuckDBWarehouse,
) -> None:
    load(warehouse, "prediction_logs", [prediction_row(i, at=T0) for i in (1, 2, 3)])
    load(
        warehouse,
        "outcomes",
        [
            outcome_row(_tx(1), "instalment_late", T0 + 17 * DAY, 2),  # known exactly at maturity: counts
            outcome_row(_tx(2), "instalment_paid", T0, 1),
            outcome_row(_tx(2), "instalment_late", T0 + 18 * DAY, 2),  # known a day after maturity: does not
            outcome_row(_tx(3), "instalment_late", T0 + 17 * DAY, 3),  # not instalment 2
        ],
    )
    summary = _run(warehouse, EARLY_DAY)
    labels = _labels(warehouse)
    assert {tx: r["early_defaulted"] for tx, r in labels.items()} == {_tx(1): True, _tx(2): False, _tx(3): False}
    assert {r["early_matured_at"] for r in labels.values()} == {T0 + 17 * DAY}
    assert {tx: r["outcome_events"] for tx, r in labels.items()} == {_tx(1): 1, _tx(2): 1, _tx(3): 1}
    assert all(r["final_defaulted"] is None and r["final_matured_at"] is None for r in labels.values())
    assert all(r["labeled_as_of"] == EARLY_DAY[1] for r in labels.values())
    assert (summary.approved, summary.early_matured, summary.early_defaults, summary.final_matured) == (3, 3, 1, 0)
    assert (summary.labeled, summary.held_back, summary.approved_without_outcome) == (3, False, 0)

    # Later, with the day-18 signal known: tx 2's early label stays what was known at its maturity.
    relabelled = _run(warehouse, _day(T0 + 19 * DAY), relabel_days=2)
    assert relabelled.early_matured == 3 and relabelled.early_defaults == 1
    after = _labels(warehouse)
    assert {tx: r["early_defaulted"] for tx, r in after.items()} == {_tx(1): True, _tx(2): False, _tx(3): False}
    # No label changed, so no new version: the rows are those of the early day, as they were written.
    assert relabelled.labeled == 0 and after == labels


def test_a_default_known_on_day_89_is_a_final_default_on_day_91_it_is_not(warehouse: DuckDBWarehouse) -> None:
    load(warehouse, "prediction_logs", [prediction_row(i, at=T0) for i in (1, 2)])
    load(
        warehouse,
        "outcomes",
        [
            *(outcome_row(_tx(i), "instalment_paid", T0 + 14 * DAY, 2) for i in (1, 2)),
            outcome_row(_tx(1), "default", T0 + 89 * DAY, 3),
            outcome_row(_tx(2), "default", T0 + 91 * DAY, 3),
        ],
    )
    early = _run(warehouse, EARLY_DAY)
    assert (early.early_matured, early.early_defaults, early.final_matured) == (2, 0, 0)
    final = _run(warehouse, FINAL_DAY)
    assert (final.early_matured, final.final_matured, final.final_defaults) == (0, 2, 1)
    labels = _labels(warehouse)
    assert {tx: r["final_defaulted"] for tx, r in labels.items()} == {_tx(1): True, _tx(2): False}
    assert {tx: r["early_defaulted"] for tx, r in labels.items()} == {_tx(1): False, _tx(2): False}
    assert {r["final_matured_at"] for r in labels.values()} == {T0 + 90 * DAY}
    # The day-91 default is after this as_of (the end of day 90): not even counted.
    assert {tx: r["outcome_events"] for tx, r in labels.items()} == {_tx(1): 2, _tx(2): 1}
    # Labelled again a day later (relabel_days), with the day-91 default known: the final label stays as of day 90,
    # and no version is added (nothing changed).
    again = _run(warehouse, _day(T0 + 91 * DAY), relabel_days=1)
    assert again.labeled == 0 and _labels(warehouse) == labels


def test_the_final_run_labels_a_decision_the_early_run_never_saw(warehouse: DuckDBWarehouse) -> None:
    load(warehouse, "prediction_logs", [prediction_row(1, at=T0)])
    load(
        warehouse,
        "outcomes",
        [outcome_row(_tx(1), "instalment_late", T0 + 17 * DAY, 2), outcome_row(_tx(1), "default", T0 + 31 * DAY, 2)],
    )
    summary = _run(warehouse, FINAL_DAY)
    [row] = _labels(warehouse).values()
    assert (row["early_defaulted"], row["final_defaulted"], row["outcome_events"]) == (True, True, 2)
    assert (summary.early_matured, summary.final_matured, summary.early_defaults, summary.final_defaults) == (
        0,
        1,
        0,
        1,
    )


def test_the_final_label_stays_null_until_its_maturity_instant(warehouse: DuckDBWarehouse) -> None:
    # Horizons a day apart, so that one run sees a decision whose early label matured and whose final one has not.
    close = GroundTruthSettings(early_maturity_days=17, maturity_days=18, early_grace_hours=0)
    load(warehouse, "prediction_logs", [prediction_row(1, at=T0)])
    load(warehouse, "outcomes", [outcome_row(_tx(1), "default", T0 + 17 * DAY, 2)])
    _run(warehouse, EARLY_DAY, close, relabel_days=0)
    [row] = _labels(warehouse).values()
    assert (row["early_defaulted"], row["final_defaulted"], row["final_matured_at"]) == (True, None, None)
    _run(warehouse, _day(T0 + 18 * DAY), close)
    [row] = _labels(warehouse).values()
    assert (row["early_defaulted"], row["final_defaulted"], row["final_matured_at"]) == (True, True, T0 + 18 * DAY)


def test_denied_and_manual_review_decisions_are_never_labelled(warehouse: DuckDBWarehouse) -> None:
    load(
        warehouse,
        "prediction_logs",
        [
            prediction_row(1, at=T0),
            prediction_row(2, at=T0, decision="deny"),
            prediction_row(3, at=T0, decision="deny"),
            prediction_row(4, at=T0, decision="manual_review"),
            prediction_row(5, at=T0, decision="manual_review"),
        ],
    )
    # Outcomes even for the denied applicant 2 (a wrong join upstream) and the reviewed-and-granted 4.
    load(
        warehouse,
        "outcomes",
        [outcome_row(_tx(i), "instalment_late", T0 + 17 * DAY, 2) for i in (1, 2, 4)],
    )
    for interval in (EARLY_DAY, FINAL_DAY):
        summary = _run(warehouse, interval)
        assert (summary.approved, summary.denied_no_outcome_expected, summary.manual_review_unlabeled) == (1, 2, 2)
        assert (summary.denied_with_outcome, summary.manual_review_with_outcome) == (1, 1)
    assert list(_labels(warehouse)) == [_tx(1)]


def test_only_outcomes_known_between_the_purchase_and_as_of_are_seen(warehouse: DuckDBWarehouse) -> None:
    # The warehouse already holds the whole future (a backfill long after the fact).
    load(warehouse, "prediction_logs", [prediction_row(1, at=T0)])
    load(
        warehouse,
        "outcomes",
        [
            outcome_row(_tx(1), "instalment_late", T0 - DAY, 2),  # dated before the purchase: not about it
            outcome_row(_tx(1), "instalment_paid", T0 + 14 * DAY, 2),
            outcome_row(_tx(1), "default", T0 + 18 * DAY, 3),  # after the early run's as_of (midnight before)
        ],
    )
    summary = _run(warehouse, EARLY_DAY)
    [row] = _labels(warehouse).values()
    assert (row["early_defaulted"], row["outcome_events"]) == (False, 1)
    assert summary.early_defaults == 0 and summary.outcomes_in_window == 1  # the rest of the book's signal only
    _run(warehouse, FINAL_DAY)
    [row] = _labels(warehouse).values()
    assert (row["early_defaulted"], row["final_defaulted"], row["outcome_events"]) == (False, True, 2)


def test_relabel_days_labels_again_with_outcomes_stated_as_delivered_before_the_label_was_written(
    warehouse: DuckDBWarehouse,
) -> None:
    load(warehouse, "prediction_logs", [prediction_row(i, at=T0) for i in (1, 2)])
    load(warehouse, "outcomes", [outcome_row(_tx(i), "instalment_paid", T0, 1) for i in (1, 2)])
    _run(warehouse, EARLY_DAY)
    assert {tx: r["early_defaulted"] for tx, r in _labels(warehouse).items()} == {_tx(1): False, _tx(2): False}
    # Known and stated as delivered on day 17, loaded days later (an import of history): its arrival is not in a
    # later day's window, so only a relabel that reaches back to its label's maturity takes it.
    load(warehouse, "outcomes", [outcome_row(_tx(1), "instalment_late", T0 + 17 * DAY, 2)])
    plain = _run(warehouse, _day(T0 + 19 * DAY))
    assert (plain.approved, plain.late_outcomes, plain.labeled) == (0, 0, 0)
    assert _labels(warehouse)[_tx(1)]["early_defaulted"] is False
    wider = _run(warehouse, _day(T0 + 19 * DAY), relabel_days=2)
    assert (wider.early_matured, wider.early_defaults, wider.labeled) == (2, 1, 1)  # one new version: tx 1's
    assert {tx: r["early_defaulted"] for tx, r in _labels(warehouse).items()} == {_tx(1): True, _tx(2): False}
    # The early day's labels are still there, as they were written; the revision of the week is recorded, with no
    # late outcome (it arrived, by its own account, before the revised version was written).
    assert {tx: r["early_defaulted"] for tx, r in _labels(warehouse, EARLY_DAY[1]).items()} == {
        _tx(1): False,
        _tx(2): False,
    }
    [revision] = wider.revisions
    assert (revision.cohort_start, revision.label, revision.revision) == (dt.date(2026, 3, 2), "early", 1)
    assert (revision.labels_revised, revision.late_outcomes, revision.detected_at) == (1, 0, _day(T0 + 19 * DAY)[1])


def test_a_backfill_as_of_d_never_uses_an_outcome_delivered_after_d(warehouse: DuckDBWarehouse) -> None:
    load(warehouse, "prediction_logs", [prediction_row(i, at=T0) for i in (1, 2, 3, 4)])
    load(warehouse, "outcomes", [outcome_row(_tx(i), "instalment_paid", T0, 1) for i in (1, 2, 3, 4)])
    load(
        warehouse,
        "outcomes",
        [
            # All four known on day 17 (their signal's own instant is inside the horizon), delivered differently.
            outcome_row(_tx(1), "instalment_late", T0 + 17 * DAY, 2),  # received then
            outcome_row(_tx(2), "instalment_late", T0 + 17 * DAY, 2, received=T0 + 18 * DAY),  # received later
            # A replay: received much later, delivered (as stated) on day 17 + 1 h: arrived by the early run.
            outcome_row(_tx(3), "instalment_late", T0 + 17 * DAY, 2, received=T0 + 60 * DAY, delivered=T0 + 17 * DAY),
            # A stated delivery after the receipt is not believed: the receipt (day 18) is its arrival.
            outcome_row(_tx(4), "instalment_late", T0 + 17 * DAY, 2, received=T0 + 18 * DAY, delivered=T0 + 30 * DAY),
        ],
    )
    first = _run(warehouse, EARLY_DAY)
    assert {tx: r["early_defaulted"] for tx, r in _labels(warehouse).items()} == {
        _tx(1): True,
        _tx(2): False,
        _tx(3): True,
        _tx(4): False,
    }
    assert (first.early_defaults, first.outcomes_in_window) == (2, 3)  # tx 1 and 3, and the book's signal
    # The same backfill again, and the warehouse unchanged: identical rows. The next day's run finds tx 2 and 4
    # delivered late (after their early label matured) and gives them a new version; the early day stays as it was.
    again = _run(warehouse, EARLY_DAY)
    assert again.early_defaults == 2 and _labels(warehouse, EARLY_DAY[1]) == _labels(warehouse)
    later = _run(warehouse, _day(T0 + 18 * DAY))
    assert (later.approved, later.late_early_outcomes, later.labeled) == (0, 2, 2)
    assert all(r["early_defaulted"] for r in _labels(warehouse).values())
    assert [r["early_defaulted"] for r in _labels(warehouse, EARLY_DAY[1]).values()] == [True, False, True, False]
    backfill = _run(warehouse, EARLY_DAY)
    assert backfill.early_defaults == 2 and backfill.late_outcomes == 0


def test_an_outcome_delivered_late_is_detected_relabelled_recorded_and_its_week_listed_for_reevaluation(
    warehouse: DuckDBWarehouse,
) -> None:
    load(warehouse, "prediction_logs", [prediction_row(i, at=T0 + i * HOUR) for i in (1, 2, 3)])
    load(warehouse, "outcomes", [outcome_row(_tx(i), "instalment_paid", T0 + 14 * DAY, 2) for i in (1, 2, 3)])
    for day in (EARLY_DAY, _day(T0 + 18 * DAY)):
        _run(warehouse, day)
    evaluated_at = _day(T0 + 21 * DAY)[1]
    _record_evaluation(warehouse, dt.date(2026, 3, 2), "early", evaluated_at)
    assert weeks_to_reevaluate(warehouse, as_of=evaluated_at) == []
    # Instalment 2 of tx 1 and 2 was late on day 17, but the producer delivered it on day 25 (and a default of tx 1
    # on day 31, in time for the final label: not late).
    late_day = _day(T0 + 25 * DAY)
    load(
        warehouse,
        "outcomes",
        [outcome_row(_tx(i), "instalment_late", T0 + 17 * DAY, 2, received=T0 + 25 * DAY) for i in (1, 2)]
        + [outcome_row(_tx(1), "default", T0 + 31 * DAY, 3)],
    )
    summary = _run(warehouse, late_day)
    assert (summary.approved, summary.late_early_outcomes, summary.late_final_outcomes, summary.labeled) == (0, 2, 0, 2)
    [revision] = summary.revisions
    assert (revision.cohort_start, revision.label, revision.revision) == (dt.date(2026, 3, 2), "early", 1)
    assert (revision.labels_revised, revision.late_outcomes, revision.detected_at) == (2, 2, late_day[1])
    assert summary.as_dict()["revisions"][0]["cohort_start"] == "2026-03-02" and summary.as_dict()["late_outcomes"] == 2
    # Recorded, not overwritten: the labels as of the evaluation are still there.
    assert [r["early_defaulted"] for r in _labels(warehouse, evaluated_at).values()] == [False, False, False]
    assert [r["early_defaulted"] for r in _labels(warehouse).values()] == [True, True, False]
    # A re-run of the day writes the same rows.
    again = _run(warehouse, late_day)
    assert again.revisions == summary.revisions and len(_versions(warehouse)) == 5
    rows = warehouse.query("SELECT * FROM shadowgate.label_revisions").to_pylist()
    assert len(rows) == 1 and rows[0]["late_outcomes"] == 2

    # The week was evaluated before the revision: listed (not before the revision was detected, nor after it is
    # evaluated again).
    assert weeks_to_reevaluate(warehouse, as_of=late_day[0]) == []
    [todo] = weeks_to_reevaluate(warehouse, as_of=late_day[1])
    assert (todo.cohort_start, todo.label, todo.revision, todo.labels_revised, todo.late_outcomes) == (
        dt.date(2026, 3, 2),
        "early",
        1,
        2,
        2,
    )
    assert todo.evaluated_as_of == evaluated_at
    # The weekly run adds the revised week to those due (once, for a label it evaluates).
    from shadowgate.pipelines.performance import cohort_week, revised_weeks

    due = [cohort_week(dt.date(2026, 3, 9), "early", as_of=late_day[1])]
    again_due = revised_weeks(warehouse, as_of=late_day[1], labels=["early", "final"], due=due)
    assert [(w.start, w.label, w.as_of) for w in again_due] == [(dt.date(2026, 3, 2), "early", late_day[1])]
    assert revised_weeks(warehouse, as_of=late_day[1], labels=["final"]) == []
    assert revised_weeks(warehouse, as_of=late_day[1], labels=["early"], due=again_due) == []
    _record_evaluation(warehouse, dt.date(2026, 3, 2), "early", late_day[1])
    assert weeks_to_reevaluate(warehouse, as_of=late_day[1]) == []


def _record_evaluation(warehouse: DuckDBWarehouse, week: dt.date, label: str, as_of: dt.datetime) -> None:
    """A model_metrics figure of ``week`` / ``label`` as weekly_performance writes one at ``as_of``."""
    import pyarrow as pa

    from shadowgate.storage.warehouse import MODEL_METRICS, arrow_schema

    row = {
        "metric_id": f"{week}-{label}", "experiment_id": "shadow-challenger", "cohort_start": week,
        "cohort_end": week + dt.timedelta(days=7), "label": label, "population": "approved_matured",
        "model": "champion@1", "alias": "champion", "model_version": "1", "segment": "all", "segment_value": "all",
        "metric": "auc", "value": 0.7, "n": 3, "n_positive": 1, "as_of": as_of, "mlflow_run_id": None,
    }  # fmt: skip
    batch = pa.Table.from_pylist([row], schema=arrow_schema(MODEL_METRICS))
    staging = warehouse.stage(MODEL_METRICS, batch, batch_id=str(as_of.timestamp()))
    warehouse.merge(MODEL_METRICS, staging=staging, params={"cohort_start": week, "label": label})


def test_a_weekly_cohort_as_of_t_returns_the_labels_known_at_t_after_a_later_relabel(
    warehouse: DuckDBWarehouse,
) -> None:
    monday = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    week = {"cohort_start": monday, "cohort_end": monday + 7 * DAY}
    load(warehouse, "prediction_logs", [prediction_row(i, at=T0 + i * HOUR) for i in (1, 2, 3)])
    load(warehouse, "outcomes", [outcome_row(_tx(i), "instalment_paid", T0 + 14 * DAY, 2) for i in (1, 2, 3)])
    load(warehouse, "outcomes", [outcome_row(_tx(1), "instalment_late", T0 + 17 * DAY, 2)])
    for day in (EARLY_DAY, _day(T0 + 18 * DAY)):
        _run(warehouse, day)
    run_at = _day(T0 + 21 * DAY)[1]

    def cohort(as_of: dt.datetime) -> dict[str, bool]:
        rows = warehouse.run("queries/weekly_cohort", {**week, "label": "early", "as_of": as_of}).to_pylist()
        return {r["transaction_id"]: r["defaulted"] for r in rows}

    known_then = cohort(run_at)
    assert known_then == {_tx(1): True, _tx(2): False, _tx(3): False}
    # Later: tx 2's late instalment delivered on day 30, a relabel over the whole range, and a default of tx 3 that
    # the final label sees.
    load(
        warehouse,
        "outcomes",
        [
            outcome_row(_tx(2), "instalment_late", T0 + 17 * DAY, 2, received=T0 + 30 * DAY),
            outcome_row(_tx(3), "default", T0 + 45 * DAY, 3),
        ],
    )
    _run(warehouse, _day(T0 + 30 * DAY))
    _run(warehouse, _day(T0 + 92 * DAY), relabel_days=80)
    assert cohort(run_at) == known_then  # the cohort as of the earlier run: exactly what was known then
    now = _day(T0 + 92 * DAY)[1]
    assert cohort(now) == {_tx(1): True, _tx(2): True, _tx(3): False}

    def final(as_of: dt.datetime) -> dict[str, bool]:
        rows = warehouse.run("queries/weekly_cohort", {**week, "label": "final", "as_of": as_of}).to_pylist()
        return {r["transaction_id"]: r["defaulted"] for r in rows}

    assert final(run_at) == {} and final(now) == {_tx(1): False, _tx(2): False, _tx(3): True}
    # Versions: one per change only (tx 1: early day, final day; tx 2: early, day 30, final; tx 3: early, final).
    assert [(tx, at.date().isoformat()) for tx, at, _, _ in _versions(warehouse)] == [
        (_tx(1), "2026-03-20"),
        (_tx(1), "2026-06-03"),
        (_tx(2), "2026-03-20"),
        (_tx(2), "2026-04-02"),
        (_tx(2), "2026-06-03"),
        (_tx(3), "2026-03-20"),
        (_tx(3), "2026-06-03"),
    ]


def _feed(n: int, *, jitter_s: float, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[str]]:
    """``n`` approved purchases at T0 + k minutes, a third of them with instalment 2 late; a producer that flags and
    delivers each signal up to ``jitter_s`` seconds after the simulator would (at least one second)."""
    import random

    rng = random.Random(seed)
    predictions = [prediction_row(i, at=T0 + i * dt.timedelta(minutes=1)) for i in range(n)]
    outcomes, late = [], set()
    for i in range(n):
        bought = T0 + i * dt.timedelta(minutes=1)
        flagged = bought + 17 * DAY + dt.timedelta(seconds=rng.uniform(1, jitter_s))
        delivered = flagged + dt.timedelta(seconds=rng.uniform(0, jitter_s))
        if i % 3 == 0:
            late.add(_tx(i))
            outcomes.append(outcome_row(_tx(i), "instalment_late", flagged, 2, received=delivered))
        else:
            outcomes.append(outcome_row(_tx(i), "instalment_paid", bought + 14 * DAY, 2))
    return predictions, outcomes, late


@pytest.mark.parametrize("jitter_s", [1.0, 600.0, 6 * 3600.0, 20 * 3600.0])
def test_the_grace_window_keeps_the_early_label_right_on_a_jittered_feed(
    warehouse: DuckDBWarehouse, jitter_s: float
) -> None:
    predictions, outcomes, late = _feed(90, jitter_s=jitter_s, seed=int(jitter_s))
    load(warehouse, "prediction_logs", predictions)
    load(warehouse, "outcomes", outcomes)
    graced = GroundTruthSettings()  # 24 h by default
    for day in range(17, 20):
        _run(warehouse, _day(T0 + day * DAY), graced)
    labels = _labels(warehouse)
    assert len(labels) == 90
    assert {tx for tx, r in labels.items() if r["early_defaulted"]} == late  # the truth, to the purchase
    assert {r["early_matured_at"] - r["event_timestamp"] for r in labels.values()} == {17 * DAY + 24 * HOUR}


def test_without_a_grace_window_a_feed_one_second_late_is_missed(warehouse: DuckDBWarehouse) -> None:
    predictions, outcomes, late = _feed(30, jitter_s=1.0, seed=1)
    load(warehouse, "prediction_logs", predictions)
    load(warehouse, "outcomes", outcomes)
    summary = _run(warehouse, EARLY_DAY)  # SETTINGS: no grace
    assert summary.early_matured == 30 and len(late) == 10
    assert summary.early_defaults == 0 and not any(r["early_defaulted"] for r in _labels(warehouse).values())


AGE = {"instalment_paid": 14, "instalment_late": 20, "default": 40}
"""Days from purchase to signal in the synthetic book: every purchase pays instalment 2 at 14 days; some then pay
instalment 3 late (20 days) or default (40 days)."""


def _book(
    day: int, *, per_day: dict[str, int], sent: dict[str, int] | None = None, until: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The purchases of the book whose ``type`` signal falls on the ``day``-th day from the early day: ``per_day[type]``
    of them, approved ``AGE[type]`` days before, sending it that day — or only ``sent[type]`` of them. Their payments
    of instalment 2 (14 days after purchase) come too; signals after day ``until`` are not delivered yet. Returns
    (prediction_logs rows, outcomes rows)."""
    midnight = EARLY_DAY[0] + day * DAY
    predictions, outcomes = [], []
    for kind, count in per_day.items():
        bought = midnight - AGE[kind] * DAY + HOUR
        for k in range(count):
            tx = f"tx_book_{kind}_{day}_{k}"
            i = 100_000 + 1_000 * (day + 200) + 100 * list(AGE).index(kind) + k
            predictions.append(prediction_row(i, at=bought, transaction_id=tx))
            signals = [("instalment_paid", bought + AGE["instalment_paid"] * DAY + k * DAY / (count + 1), 2)]
            if kind != "instalment_paid" and k < (sent or per_day)[kind]:
                signals.append((kind, midnight + (k + 1) * DAY / (count + 1), 3))
            for signal, at, instalment in signals:
                if at < EARLY_DAY[0] + (until + 1) * DAY:
                    outcomes.append(outcome_row(tx, signal, at, instalment))
    return predictions, outcomes


@pytest.mark.parametrize(("defaults_today", "dead"), [(0, True), (2, True), (6, False), (12, False)])
def test_a_dead_default_stream_alerts_while_payments_still_flow(
    warehouse: DuckDBWarehouse, defaults_today: int, dead: bool, caplog: pytest.LogCaptureFixture
) -> None:
    load(warehouse, "prediction_logs", [prediction_row(i, at=T0 + i * HOUR) for i in range(10)])
    load(warehouse, "outcomes", [outcome_row(_tx(i), "instalment_paid", T0 + 14 * DAY, 2) for i in range(10)])
    # A steady book delivering 60 payments, 8 late instalments and 12 defaults a day, then the early day with the
    # payments and the late instalments as usual and ``defaults_today`` defaults.
    usual = {"instalment_paid": 40, "instalment_late": 8, "default": 12}
    # Signal days from -70 to +40: every day of the baseline and the window then has 60 purchases of every age.
    for day in range(-70, 41):
        predictions, outcomes = _book(
            day, per_day=usual, sent={**usual, "default": defaults_today} if day == 0 else None
        )
        load(warehouse, "prediction_logs", predictions)
        load(warehouse, "outcomes", outcomes)
    with caplog.at_level("ERROR", logger="shadowgate.pipelines.alerts"):
        summary = _run(warehouse, EARLY_DAY)
    flows = {f.event_type: (f.arrived, round(f.expected, 3)) for f in summary.signals}
    # Expected: the baseline's signals per purchase of each age, times the purchases of that age today.
    assert flows["instalment_late"] == (8, 8.0) and flows["default"] == (defaults_today, 12.0)
    # Every purchase pays instalment 2 at 14 days: 60 a day, the cohort's own ten among the baseline's.
    assert flows["instalment_paid"] == (60, 60.0)
    # Payments flow as usual, so the whole-feed checks pass: only the per-type check can tell.
    assert summary.approved_without_outcome == 0 and summary.outcomes_in_window > 0
    assert summary.held_back is dead and (summary.labeled == 0) is dead
    if dead:
        [alert] = summary.alerts
        assert alert.startswith(f"default signals: {defaults_today} arrived in the window, 12.0 expected")
        assert "the outcome feed looks broken" in caplog.text and "expected_default" in caplog.text
    else:
        assert summary.alerts == () and "ALERT" not in caplog.text


def test_a_book_that_stops_growing_is_not_a_dead_stream(warehouse: DuckDBWarehouse) -> None:
    """A replayed quarter ends: no purchase after day -20, so payments (at 14 days) stop after day -6, while late
    instalments (at 20) and defaults (at 40 days) go on. Measured against the last four weeks' raw rate, payments
    would look dead."""
    load(warehouse, "prediction_logs", [prediction_row(i, at=T0 + i * HOUR) for i in range(10)])
    load(warehouse, "outcomes", [outcome_row(_tx(i), "instalment_paid", T0 + 14 * DAY, 2) for i in range(10)])
    usual = {"instalment_paid": 40, "instalment_late": 8, "default": 12}
    for day in range(-70, 41):
        # Purchases of day d − AGE exist only up to day -20.
        per_day = {kind: n for kind, n in usual.items() if day - AGE[kind] <= -20}
        predictions, outcomes = _book(day, per_day=per_day)
        load(warehouse, "prediction_logs", predictions)
        load(warehouse, "outcomes", outcomes)
    summary = _run(warehouse, EARLY_DAY)
    flows = {f.event_type: (f.arrived, round(f.expected, 3)) for f in summary.signals}
    assert flows["instalment_paid"] == (0, 0.0)  # no purchase of that age today: none expected
    assert flows["instalment_late"] == (8, 8.0) and flows["default"] == (12, 12.0)
    assert not summary.held_back and summary.alerts == ()


def test_a_book_without_a_baseline_is_not_judged_per_signal_type(warehouse: DuckDBWarehouse) -> None:
    load(warehouse, "prediction_logs", [prediction_row(1, at=T0)])
    load(warehouse, "outcomes", [outcome_row(_tx(1), "instalment_paid", T0 + 14 * DAY, 2)])
    summary = _run(warehouse, EARLY_DAY)
    defaults = next(f for f in summary.signals if f.event_type == "default")
    assert (defaults.arrived, defaults.expected, defaults.p_value, summary.held_back) == (0, 0.0, 1.0, False)


def test_a_rerun_is_identical_and_an_older_run_never_undoes_a_newer_one(warehouse: DuckDBWarehouse) -> None:
    load(warehouse, "prediction_logs", [prediction_row(i, at=T0 + i * dt.timedelta(hours=1)) for i in range(1, 6)])
    load(
        warehouse,
        "outcomes",
        [outcome_row(_tx(i), "instalment_late", T0 + 17 * DAY, 2) for i in (1, 2)]
        + [outcome_row(_tx(i), "instalment_paid", T0 + 14 * DAY, 2) for i in (3, 4, 5)]
        + [outcome_row(_tx(1), "default", T0 + 31 * DAY, 2)],
    )
    _run(warehouse, EARLY_DAY)
    early = _labels(warehouse)
    again = _run(warehouse, EARLY_DAY)
    assert _labels(warehouse) == early and again.labeled == 5
    _run(warehouse, FINAL_DAY)
    final = _labels(warehouse)
    assert [r["final_defaulted"] for r in final.values()] == [True, False, False, False, False]
    # A backfill of the early day after the final run: its report is what was known then, the rows stay final.
    backfill = _run(warehouse, EARLY_DAY)
    assert (backfill.early_matured, backfill.early_defaults, backfill.final_matured) == (5, 2, 0)
    assert _labels(warehouse) == final
    # A later run whose final horizon has not come (maturity_days=120) recomputes the early label only: the mature
    # final label is kept, not turned back to NULL.
    longer = GroundTruthSettings(maturity_days=120)
    _run(warehouse, _day(T0 + 91 * DAY), longer, relabel_days=80)
    kept = _labels(warehouse)
    assert [r["final_defaulted"] for r in kept.values()] == [True, False, False, False, False]
    assert all(r["labeled_as_of"] == _day(T0 + 91 * DAY)[1] for r in kept.values())


def test_segment_columns(warehouse: DuckDBWarehouse) -> None:
    cases = {
        1: ({"amount": 99.99, "customer_tenure_days": 89}, ("0-100", "new")),
        2: ({"amount": 100.0, "customer_tenure_days": 90}, ("100-500", "returning")),
        3: ({"amount": 499.99, "customer_tenure_days": 0}, ("100-500", "new")),
        4: ({"amount": 500.0, "customer_tenure_days": 400}, ("500-1000", "returning")),
        5: ({"amount": 1000.0, "customer_tenure_days": 400, "channel": "app"}, ("1000+", "returning")),
    }
    load(warehouse, "prediction_logs", [prediction_row(i, at=T0, **columns) for i, (columns, _) in cases.items()])
    load(warehouse, "outcomes", [outcome_row(_tx(i), "instalment_paid", T0 + 14 * DAY, 2) for i in cases])
    _run(warehouse, EARLY_DAY)
    labels = _labels(warehouse)
    assert {i: (labels[_tx(i)]["amount_band"], labels[_tx(i)]["customer_type"]) for i in cases} == {
        i: expected for i, (_, expected) in cases.items()
    }
    assert labels[_tx(5)]["channel"] == "app" and labels[_tx(1)]["merchant_category"] == "electronics"
    row = labels[_tx(1)]
    logged = warehouse.query(
        "SELECT prediction_id, customer_id_hash, served_by, policy_name, policy_version, scores"
        " FROM shadowgate.prediction_logs WHERE transaction_id = 'tx_0000001'"
    ).to_pylist()[0]
    assert {k: row[k] for k in logged} == logged  # ids, policy and every model's score carried over as logged


def test_a_broken_outcome_feed_alerts_and_holds_the_labels_back(
    warehouse: DuckDBWarehouse, caplog: pytest.LogCaptureFixture
) -> None:
    load(warehouse, "prediction_logs", [prediction_row(i, at=T0 + i * dt.timedelta(seconds=1)) for i in range(100)])
    # 98 of 100 have an outcome: 2 % without one is at the threshold, not above it.
    paid = [outcome_row(_tx(i), "instalment_paid", T0 + 14 * DAY, 2) for i in range(100)]
    load(warehouse, "outcomes", paid[:98])
    with caplog.at_level("ERROR", logger="shadowgate.pipelines.alerts"):
        fine = _run(warehouse, EARLY_DAY)
    assert (fine.approved_without_outcome, fine.no_outcome_share, fine.held_back) == (2, 0.02, False)
    assert "ALERT" not in caplog.text and fine.labeled == 100
    unknown = [r for r in _labels(warehouse).values() if r["outcome_events"] == 0]
    assert [(r["transaction_id"], r["early_defaulted"]) for r in unknown] == [(_tx(98), False), (_tx(99), False)]

    # One more decision without an outcome: 3 of 101 is above 2 %: alert, nothing written for the window.
    load(warehouse, "prediction_logs", [prediction_row(100, at=T0 + DAY / 2)])
    with caplog.at_level("ERROR", logger="shadowgate.pipelines.alerts"):
        broken = _run(warehouse, EARLY_DAY, relabel_days=0)
    assert broken.held_back and broken.labeled == 0 and broken.approved_without_outcome == 3
    assert "the outcome feed looks broken" in caplog.text and "3 of 101" in caplog.text
    assert len(_labels(warehouse)) == 100  # the new decision was held back

    # No outcome at all in the window while decisions matured: alert whatever the threshold.
    warehouse.query("DELETE FROM shadowgate.outcomes")  # the rest of the book's signals too
    caplog.clear()
    with caplog.at_level("ERROR", logger="shadowgate.pipelines.alerts"):
        empty = _run(warehouse, EARLY_DAY, GroundTruthSettings(no_outcome_alert_share=1.0, early_grace_hours=0))
    assert empty.held_back and empty.outcomes_in_window == 0
    assert empty.alerts == ("no outcome at all known in the window, with 101 matured approved decisions",)
    assert "ALERT [error] join_ground_truth" in caplog.text


def test_pending_counts_approved_decisions_of_the_last_maturity_days(warehouse: DuckDBWarehouse) -> None:
    as_of = EARLY_DAY[1]
    load(
        warehouse,
        "prediction_logs",
        [
            prediction_row(1, at=as_of - 90 * DAY),  # final label matures exactly at as_of: not pending
            prediction_row(2, at=as_of - 90 * DAY + dt.timedelta(seconds=1)),
            prediction_row(3, at=as_of),
            prediction_row(4, at=as_of + dt.timedelta(seconds=1)),  # after as_of: not known yet
            prediction_row(5, at=as_of - DAY, decision="deny"),
        ],
    )
    assert _run(warehouse, EARLY_DAY).pending_final == 2


def test_the_window_and_its_checks() -> None:
    start, end = EARLY_DAY
    window = label_window(interval_start=start, interval_end=end, settings=SETTINGS, relabel_days=3)
    assert (window.as_of, window.window_start) == (end, start - 3 * DAY)
    assert (window.early_from, window.early_to) == (start - 20 * DAY, end - 17 * DAY)
    assert (window.final_from, window.final_to) == (start - 93 * DAY, end - 90 * DAY)
    with pytest.raises(ValueError, match="timezone-aware"):
        label_window(interval_start=start.replace(tzinfo=None), interval_end=end, settings=SETTINGS)
    with pytest.raises(ValueError, match="after interval_start"):
        label_window(interval_start=end, interval_end=start, settings=SETTINGS)
    with pytest.raises(ValueError, match="relabel_days"):
        label_window(interval_start=start, interval_end=end, settings=SETTINGS, relabel_days=-1)
    with pytest.raises(pydantic.ValidationError, match="must not exceed maturity_days"):
        GroundTruthSettings(early_maturity_days=30, maturity_days=20)


def test_a_run_without_a_data_interval_labels_the_last_whole_day() -> None:
    def utc(*args: int) -> dt.datetime:
        return dt.datetime(*args, tzinfo=dt.UTC)

    assert last_complete_day(utc(2026, 3, 5, 13, 45)) == (utc(2026, 3, 4), utc(2026, 3, 5))
    assert last_complete_day(utc(2026, 3, 5)) == (utc(2026, 3, 4), utc(2026, 3, 5))
    berlin = dt.timezone(dt.timedelta(hours=1))
    assert last_complete_day(dt.datetime(2026, 3, 5, 0, 30, tzinfo=berlin)) == (utc(2026, 3, 3), utc(2026, 3, 4))


def test_a_purchase_decided_twice_is_labelled_once_by_its_first_decision(warehouse: DuckDBWarehouse) -> None:
    # The client lost the answer of decision 1 and sent the purchase again: decision 2 is the same transaction.
    first = prediction_row(1, at=T0)
    retried = {**prediction_row(2, at=T0), "transaction_id": _tx(1), "served_at": T0 + dt.timedelta(seconds=3)}
    load(warehouse, "prediction_logs", [first, retried])
    load(warehouse, "outcomes", [outcome_row(_tx(1), "instalment_paid", T0 + 14 * DAY, 2)])
    summary = _run(warehouse, EARLY_DAY)
    rows = warehouse.query("SELECT prediction_id FROM shadowgate.labeled_predictions").to_pylist()
    assert rows == [{"prediction_id": first["prediction_id"]}]
    assert (summary.approved, summary.labeled) == (1, 1)
