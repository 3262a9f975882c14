"""The label rules of join_ground_truth on a hand-built warehouse (DuckDB in memory): maturity boundaries to the
second, point in time, who is labelled, the report and the outcome-feed alert."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from shadowgate.config import GroundTruthSettings
from shadowgate.pipelines.ground_truth import GroundTruthSummary, join_ground_truth, label_window, last_complete_day
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import default_sql_dir
from tests.warehouse_rows import load, outcome_row, prediction_row

T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
"""Every purchase here is made at T0 (its early label matures on 2026-03-19 10:00, its final one on 2026-05-31)."""
DAY = dt.timedelta(days=1)
SETTINGS = GroundTruthSettings()


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


def _labels(warehouse: DuckDBWarehouse) -> dict[str, dict[str, Any]]:
    rows = warehouse.query("SELECT * FROM shadowgate.labeled_predictions ORDER BY transaction_id").to_pylist()
    return {r["transaction_id"]: r for r in rows}


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
    assert after[_tx(2)]["outcome_events"] == 2  # both of its signals are known by this as_of


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
    # Labelled again a day later (relabel_days), with the day-91 default known: the final label stays as of day 90.
    _run(warehouse, _day(T0 + 91 * DAY), relabel_days=1)
    after = _labels(warehouse)
    assert {tx: r["final_defaulted"] for tx, r in after.items()} == {_tx(1): True, _tx(2): False}
    assert {tx: r["outcome_events"] for tx, r in after.items()} == {_tx(1): 2, _tx(2): 2}


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
    close = GroundTruthSettings(early_maturity_days=17, maturity_days=18)
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


def test_relabel_days_labels_again_with_outcomes_that_arrived_late(warehouse: DuckDBWarehouse) -> None:
    load(warehouse, "prediction_logs", [prediction_row(i, at=T0) for i in (1, 2)])
    load(warehouse, "outcomes", [outcome_row(_tx(i), "instalment_paid", T0, 1) for i in (1, 2)])
    _run(warehouse, EARLY_DAY)
    assert {tx: r["early_defaulted"] for tx, r in _labels(warehouse).items()} == {_tx(1): False, _tx(2): False}
    # Known on day 17, loaded days later (an outcome producer's backlog).
    load(warehouse, "outcomes", [outcome_row(_tx(1), "instalment_late", T0 + 17 * DAY, 2)])
    plain = _run(warehouse, _day(T0 + 19 * DAY))
    assert plain.approved == 0 and _labels(warehouse)[_tx(1)]["early_defaulted"] is False  # outside its window
    wider = _run(warehouse, _day(T0 + 19 * DAY), relabel_days=2)
    assert (wider.early_matured, wider.early_defaults, wider.labeled) == (2, 1, 2)
    assert {tx: r["early_defaulted"] for tx, r in _labels(warehouse).items()} == {_tx(1): True, _tx(2): False}


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
        empty = _run(warehouse, EARLY_DAY, GroundTruthSettings(no_outcome_alert_share=1.0))
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
