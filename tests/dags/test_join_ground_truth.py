"""join_ground_truth with dag.test(): real Airflow metadata DB, a DuckDB warehouse file holding a simulated world's
decisions and its whole outcome log; labels and reports checked against pandas on the simulator's tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shadowgate.simulation import SimulationResult
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import default_sql_dir
from tests.dags.conftest import load_dag
from tests.warehouse_rows import load, simulated_outcomes, simulated_prediction_logs

DAY = pd.Timedelta(days=1)
EARLY, FINAL = 17, 90
GRACE = pd.Timedelta(hours=24)
"""The early label's grace window (GroundTruthSettings' default)."""
REPORT_KEYS = (
    "approved",
    "denied_no_outcome_expected",
    "denied_with_outcome",
    "manual_review_unlabeled",
    "manual_review_with_outcome",
    "early_matured",
    "early_defaults",
    "final_matured",
    "final_defaults",
    "pending_final",
    "approved_without_outcome",
    "outcomes_in_window",
    "late_early_outcomes",
    "late_final_outcomes",
)


def _decide(world: SimulationResult) -> pd.DataFrame:
    """The world's purchases decided by a champion that knew the true default probability: approve below 6 %,
    review below 12 %, deny above; with the prediction ids they are logged under."""
    p = world.labels["default_probability"].to_numpy()
    frame = world.transactions[["transaction_id", "event_timestamp"]].copy()
    frame["prediction_id"] = [f"{k:032x}" for k in range(len(frame))]
    frame["decision"] = np.where(p < 0.06, "approve", np.where(p < 0.12, "manual_review", "deny"))
    frame["score"] = p
    frame["is_default"] = world.labels["is_default"].to_numpy()
    return frame


class Book:
    """A warehouse file with every decision of the world and the outcomes of the credit it granted (approved and
    reviewed purchases; a denied applicant has none): the whole future is in it, as in a late backfill."""

    def __init__(self, world: SimulationResult, home: Path) -> None:
        self.path = home / "warehouse" / "warehouse.duckdb"
        self.decisions = _decide(world)
        granted = set(self.decisions.loc[self.decisions["decision"] != "deny", "transaction_id"])
        self.outcomes = world.outcomes[world.outcomes["transaction_id"].isin(granted)].reset_index(drop=True)
        self.transactions = world.transactions
        with self.warehouse() as warehouse:
            warehouse.ensure_tables()
            decisions, scores = self.decisions["decision"].to_numpy(), self.decisions["score"].to_numpy()
            load(warehouse, "prediction_logs", simulated_prediction_logs(world.transactions, decisions, scores))
            self.load_outcomes()

    def warehouse(self) -> DuckDBWarehouse:
        return DuckDBWarehouse(self.path, sql_dir=default_sql_dir())

    def load_outcomes(self, outcomes: pd.DataFrame | None = None) -> None:
        with self.warehouse() as warehouse:
            load(warehouse, "outcomes", simulated_outcomes(self.outcomes if outcomes is None else outcomes))

    def stored(self) -> pd.DataFrame:
        """Each decision's latest label version."""
        with self.warehouse() as warehouse:
            rows = warehouse.query(
                "SELECT * FROM shadowgate.labeled_predictions"
                " QUALIFY ROW_NUMBER() OVER (PARTITION BY prediction_id ORDER BY labeled_as_of DESC) = 1"
                " ORDER BY prediction_id"
            )
        return rows.to_pandas().set_index("prediction_id")

    def expected(self, day: str, *, relabel_days: int = 0) -> tuple[dict[str, tuple[Any, ...]], dict[str, int]]:
        """The labels (prediction id → early, final, outcome events) and the report of the run for ``day``,
        computed with pandas from the simulator's tables."""
        d, outcomes = self.decisions.copy(), self.outcomes
        as_of = pd.Timestamp(day, tz="UTC") + DAY
        start = as_of - (1 + relabel_days) * DAY
        d["early_at"] = d["event_timestamp"] + EARLY * DAY + GRACE
        d["final_at"] = d["event_timestamp"] + FINAL * DAY
        d["in_early"] = (d["early_at"] > start) & (d["early_at"] <= as_of)
        d["in_final"] = (d["final_at"] > start) & (d["final_at"] <= as_of)
        cohort = d[d["in_early"] | d["in_final"]]
        joined = outcomes.merge(cohort, on="transaction_id", suffixes=("", "_purchase"))
        known = joined[
            (joined["event_timestamp"] >= joined["event_timestamp_purchase"]) & (joined["event_timestamp"] <= as_of)
        ]
        kind = known["event_type"]
        early_signal = (kind == "default") | ((kind == "instalment_late") & (known["instalment"] == 2))
        early_bad = set(known.loc[early_signal & (known["event_timestamp"] <= known["early_at"]), "prediction_id"])
        final_signal = (kind == "default") & (known["event_timestamp"] <= known["final_at"])
        final_bad = set(known.loc[final_signal, "prediction_id"])
        events = known.groupby("prediction_id").size()
        approved = cohort[cohort["decision"] == "approve"]
        labels = {
            r.prediction_id: (
                r.prediction_id in early_bad,
                (r.prediction_id in final_bad) if r.final_at <= as_of else None,
                int(events.get(r.prediction_id, 0)),
            )
            for r in approved.itertuples()
        }
        denied, reviewed = cohort[cohort["decision"] == "deny"], cohort[cohort["decision"] == "manual_review"]
        recent = d[(d["event_timestamp"] > as_of - FINAL * DAY) & (d["event_timestamp"] <= as_of)]
        report = {
            "approved": len(approved),
            "denied_no_outcome_expected": len(denied),
            "denied_with_outcome": int(denied["prediction_id"].isin(events.index).sum()),
            "manual_review_unlabeled": len(reviewed),
            "manual_review_with_outcome": int(reviewed["prediction_id"].isin(events.index).sum()),
            "early_matured": int(approved["in_early"].sum()),
            "early_defaults": sum(labels[k][0] for k in approved.loc[approved["in_early"], "prediction_id"]),
            "final_matured": int(approved["in_final"].sum()),
            "final_defaults": sum(bool(labels[k][1]) for k in approved.loc[approved["in_final"], "prediction_id"]),
            "pending_final": int((recent["decision"] == "approve").sum()),
            "approved_without_outcome": sum(v[2] == 0 for v in labels.values()),
            "outcomes_in_window": int(
                ((outcomes["event_timestamp"] > start) & (outcomes["event_timestamp"] <= as_of)).sum()
            ),
            # Every signal is received the instant it is known: none is late.
            "late_early_outcomes": 0,
            "late_final_outcomes": 0,
        }
        return labels, report


@pytest.fixture
def book(airflow_db: Path, tmp_path: Path, baseline: SimulationResult, monkeypatch: pytest.MonkeyPatch) -> Book:
    monkeypatch.setenv("SHADOWGATE_HOME", str(tmp_path / "home"))
    for name in ("SHADOWGATE_WAREHOUSE_BACKEND", "SHADOWGATE_WAREHOUSE_DUCKDB_PATH", "SHADOWGATE_ALERT_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    return Book(baseline, tmp_path / "home")


def _run(day: str, **conf: Any) -> dict[str, Any]:
    """dag.test() of the run whose data interval is the UTC day ``day``; the task's summary (its XCom)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    dag = load_dag("join_ground_truth")
    start = pd.Timestamp(day, tz="UTC")
    # A data-interval timetable: the run triggered at the midnight that ends ``day`` covers ``day``.
    run = dag.test(logical_date=(start + DAY).to_pydatetime(), run_conf=conf)
    assert run.state == DagRunState.SUCCESS
    assert (run.data_interval_start, run.data_interval_end) == (start, start + DAY)
    with create_session() as session:
        query = XComModel.get_many(
            run_id=run.run_id, key="return_value", dag_ids="join_ground_truth", task_ids="label_matured_decisions"
        )
        [row] = session.scalars(query).all()
        summary: dict[str, Any] = XComModel.deserialize_value(row)
    return summary


def _labels(stored: pd.DataFrame) -> dict[str, tuple[Any, ...]]:
    return {
        str(k): (
            bool(r["early_defaulted"]),
            None if pd.isna(r["final_defaulted"]) else bool(r["final_defaulted"]),
            int(r["outcome_events"]),
        )
        for k, r in stored.iterrows()
    }


def _report(summary: dict[str, Any]) -> dict[str, int]:
    return {k: summary[k] for k in REPORT_KEYS}


def test_labels_match_the_simulator_and_a_rerun_writes_identical_rows(book: Book) -> None:
    day = "2026-04-19"  # early cohort: purchases of Mar 27 – Apr 3; final cohort: Jan 13 – 20 (relabel_days=6)
    summary = _run(day, relabel_days=6)
    labels, report = book.expected(day, relabel_days=6)
    assert _report(summary) == report
    assert (summary["as_of"], summary["window_start"]) == ("2026-04-20T00:00:00+00:00", "2026-04-13T00:00:00+00:00")
    assert summary["held_back"] is False and summary["labeled"] == report["approved"] == len(labels)
    stored = book.stored()
    assert _labels(stored) == labels
    # The world's own truth: every default is known within 87 days, so the final label is the simulator's label.
    final = stored[stored["final_defaulted"].notna()]
    truth = book.decisions.set_index("prediction_id").loc[final.index, "is_default"]
    assert final["final_defaulted"].astype(bool).tolist() == truth.tolist() and len(final) == report["final_matured"]
    # Every approved purchase has instalment 2 paid (day 14) or late (day 17) by its early maturity.
    assert report["approved_without_outcome"] == 0 and report["early_matured"] > 500 and report["final_matured"] > 500
    assert 0 < report["early_defaults"] < report["early_matured"] and report["final_defaults"] > 0
    assert report["denied_no_outcome_expected"] > 0 and report["denied_with_outcome"] == 0
    assert report["manual_review_with_outcome"] == report["manual_review_unlabeled"] > 0

    again = _run(day, relabel_days=6)
    assert _report(again) == report and again["labeled"] == summary["labeled"]
    pd.testing.assert_frame_equal(book.stored(), stored)


def test_a_backfill_sees_only_what_was_known_then(book: Book) -> None:
    # 72 days apart (90 − 17 days − the 24 h grace): one's early cohort is the other's final one.
    early_day, final_day = "2026-02-19", "2026-05-02"
    early = _run(early_day, relabel_days=3)
    early_labels, early_report = book.expected(early_day, relabel_days=3)
    assert _report(early) == early_report and early_report["final_matured"] == 0
    first = book.stored()
    assert _labels(first) == early_labels and first["final_defaulted"].isna().all()
    cohort = book.decisions.set_index("prediction_id").loc[first.index, "transaction_id"]
    # The warehouse held these purchases' later outcomes all along: the run did not see them.
    later = book.outcomes[
        book.outcomes["transaction_id"].isin(cohort)
        & (book.outcomes["event_timestamp"] > pd.Timestamp(early_day, tz="UTC") + DAY)
    ]
    assert len(later) > 1000 and int(first["outcome_events"].sum()) + len(later) == int(
        book.outcomes["transaction_id"].isin(cohort).sum()
    )

    final = _run(final_day, relabel_days=3)
    final_labels, final_report = book.expected(final_day, relabel_days=3)
    assert _report(final) == final_report
    assert final_report["final_matured"] == early_report["early_matured"]  # the same purchases, now final
    second = book.stored()
    assert _labels(second) == {**early_labels, **final_labels}
    same = second.loc[first.index]
    assert same["early_defaulted"].tolist() == first["early_defaulted"].tolist()  # known at day 17, kept
    assert (same["outcome_events"] >= first["outcome_events"]).all()
    assert int(same["final_defaulted"].sum()) == final_report["final_defaults"] > early_report["early_defaults"] // 4

    # The early day again, after the later run: it reports what was known then and leaves the later rows alone.
    again = _run(early_day, relabel_days=3)
    assert _report(again) == early_report
    pd.testing.assert_frame_equal(book.stored(), second)


def test_a_missing_outcome_feed_alerts_and_holds_the_labels_back(
    book: Book, webhook: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, received = webhook
    monkeypatch.setenv("SHADOWGATE_ALERT_WEBHOOK_URL", url)
    day = "2026-04-19"
    as_of = pd.Timestamp(day, tz="UTC") + DAY
    with book.warehouse() as warehouse:  # the feed stopped when the early cohort bought
        warehouse.query(
            "DELETE FROM shadowgate.outcomes WHERE event_timestamp > $since",
            {"since": (as_of - (1 + EARLY) * DAY).to_pydatetime()},
        )
    broken = _run(day)
    assert broken["held_back"] is True and broken["labeled"] == 0 and broken["outcomes_in_window"] == 0
    assert broken["approved_without_outcome"] == broken["early_matured"] > 0  # the final cohort has older outcomes
    assert book.stored().empty
    [alert] = received
    assert alert["title"] == "join_ground_truth: the outcome feed looks broken"
    assert "no outcome at all known in the window" in alert["text"] and "have no outcome known" in alert["text"]
    assert alert["details"]["approved_without_outcome"] == broken["approved_without_outcome"]

    book.load_outcomes()  # the feed repaired and caught up: the same run again
    fixed = _run(day)
    labels, report = book.expected(day)
    assert _report(fixed) == report and fixed["held_back"] is False and len(received) == 1
    assert _labels(book.stored()) == labels


def test_the_dag_is_daily_over_data_intervals_with_documented_params_and_the_asset(airflow_db: Path) -> None:
    from airflow.sdk import CronDataIntervalTimetable

    dag = load_dag("join_ground_truth")
    from common.assets import LABELED_PREDICTIONS  # importable as the DAG files import it (the folder on sys.path)

    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert (dag.timetable.expression, str(dag.timetable.timezone)) == ("0 0 * * *", "UTC")
    assert dag.max_active_runs == 1 and set(dag.tags) == {"shadowgate", "warehouse", "evaluation"}
    assert {name: dag.params.get_param(name).value for name in dag.params} == {
        "maturity_days": None,
        "early_maturity_days": None,
        "early_grace_hours": None,
        "relabel_days": 0,
    }
    assert all(len(dag.params.get_param(name).description or "") > 40 for name in dag.params)
    [task] = dag.tasks
    assert task.outlets == [LABELED_PREDICTIONS]
    assert "airflow backfill create --dag-id join_ground_truth" in (dag.doc_md or "")


def test_params_override_the_settings(book: Book) -> None:
    day = "2026-04-19"
    summary = _run(day, maturity_days=60, early_maturity_days=20)
    assert (summary["maturity_days"], summary["early_maturity_days"], summary["early_grace_hours"]) == (60, 20, 24)
    as_of = pd.Timestamp(day, tz="UTC") + DAY
    d = book.decisions
    approved = d[d["decision"] == "approve"]

    def matured_in_the_day(delay: pd.Timedelta) -> int:
        at = approved["event_timestamp"] + delay
        return int(((at > as_of - DAY) & (at <= as_of)).sum())

    assert (summary["early_matured"], summary["final_matured"]) == (
        matured_in_the_day(20 * DAY + GRACE),
        matured_in_the_day(60 * DAY),
    )
    graceless = _run(day, early_grace_hours=0)
    assert (graceless["early_grace_hours"], graceless["early_matured"]) == (0, matured_in_the_day(EARLY * DAY))


def _early_flags(stored: pd.DataFrame) -> dict[str, tuple[bool, bool | None]]:
    return {
        str(k): (bool(r["early_defaulted"]), None if pd.isna(r["final_defaulted"]) else bool(r["final_defaulted"]))
        for k, r in stored.iterrows()
    }


def test_a_jittered_replayed_feed_labels_exactly_as_the_simulator_s_instant_feed(book: Book) -> None:
    from shadowgate.simulation.world import jittered_feed

    day = "2026-04-19"
    exact, _ = book.expected(day, relabel_days=6)
    truth = {k: (early, final) for k, (early, final, _) in exact.items()}
    # The producer flags each signal 1 s – 3 h late and delivers it 1 s – 3 h after that; a replay states each
    # delivery (received long after, at the replay's wall clock).
    with book.warehouse() as warehouse:
        warehouse.query("DELETE FROM shadowgate.outcomes")
    book.load_outcomes(jittered_feed(book.outcomes, max_delay=pd.Timedelta(hours=6), seed=11))
    summary = _run(day, relabel_days=6)
    assert summary["held_back"] is False and summary["late_outcomes"] == 0
    assert _early_flags(book.stored()) == truth and sum(e for e, _ in truth.values()) > 30
    # Without the grace window the same feed loses nearly every late instalment 2 (known on day 17 to the second).
    with book.warehouse() as warehouse:
        warehouse.query("DELETE FROM shadowgate.labeled_predictions")
    _run(day, relabel_days=6, early_grace_hours=0)
    graceless = _early_flags(book.stored())
    missed = sum(truth[k][0] and not v[0] for k, v in graceless.items() if k in truth)
    assert missed > 0.8 * sum(e for e, _ in truth.values() if e)


def test_outcomes_delivered_late_are_counted_relabelled_and_their_weeks_recorded_as_revisions(book: Book) -> None:
    day, late_day = "2026-04-19", "2026-04-24"
    as_of, late_as_of = pd.Timestamp(day, tz="UTC") + DAY, pd.Timestamp(late_day, tz="UTC") + DAY
    d = book.decisions
    early_at = d["event_timestamp"] + EARLY * DAY + GRACE
    # The week whose early labels matured in the seven days to ``day`` (a run with relabel_days=6).
    cohort = d[(d["decision"] == "approve") & (early_at > as_of - 7 * DAY) & (early_at <= as_of)]
    o = book.outcomes.merge(cohort[["transaction_id", "event_timestamp", "prediction_id"]], on="transaction_id",
                            suffixes=("", "_purchase"))  # fmt: skip
    deciding = (o["event_type"] == "default") | ((o["event_type"] == "instalment_late") & (o["instalment"] == 2))
    held = o[deciding & (o["event_timestamp"] <= o["event_timestamp_purchase"] + EARLY * DAY + GRACE)]
    assert len(held) > 15
    # The producer held these back and delivered them days later.
    key = ["transaction_id", "event_type", "instalment"]
    with book.warehouse() as warehouse:
        warehouse.query("DELETE FROM shadowgate.outcomes")
    book.load_outcomes(book.outcomes[~book.outcomes.set_index(key).index.isin(held.set_index(key).index)])
    first = _run(day, relabel_days=6)
    assert first["held_back"] is False and first["early_defaults"] == 0 and first["late_outcomes"] == 0
    before = book.stored()
    revised = held["prediction_id"].unique()
    assert not before.loc[revised, "early_defaulted"].any()

    book.load_outcomes(held[book.outcomes.columns].assign(delivered_at=late_as_of - pd.Timedelta(hours=3)))
    late = _run(late_day)
    assert (late["late_early_outcomes"], late["late_final_outcomes"], late["held_back"]) == (len(held), 0, False)
    after = book.stored()
    assert after.loc[revised, "early_defaulted"].all()
    assert len(after) == len(before) + late["approved"]  # the revised decisions: new versions, not new rows
    monday = held["event_timestamp_purchase"].dt.tz_convert("UTC").dt.normalize()
    weeks = held.assign(week=(monday - pd.to_timedelta(monday.dt.weekday, unit="D")).dt.date.astype(str))
    expected = sorted(
        (week, "early", 1, g["prediction_id"].nunique(), len(g), late_as_of.isoformat())
        for week, g in weeks.groupby("week")
    )
    assert (
        sorted(
            (r["cohort_start"], r["label"], r["revision"], r["labels_revised"], r["late_outcomes"], r["detected_at"])
            for r in late["revisions"]
        )
        == expected
    )
    # Nothing overwritten: as of the early day the labels are what they were.
    with book.warehouse() as warehouse:
        then = (
            warehouse.query(
                "SELECT prediction_id, early_defaulted FROM shadowgate.labeled_predictions WHERE labeled_as_of <= $t"
                " QUALIFY ROW_NUMBER() OVER (PARTITION BY prediction_id ORDER BY labeled_as_of DESC) = 1",
                {"t": as_of.to_pydatetime()},
            )
            .to_pandas()
            .set_index("prediction_id")
        )
    assert not then.loc[revised, "early_defaulted"].any() and len(then) == len(before)


def test_a_dead_default_stream_alerts_while_payments_flow(
    book: Book, webhook: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, received = webhook
    monkeypatch.setenv("SHADOWGATE_ALERT_WEBHOOK_URL", url)
    day = "2026-04-19"
    healthy = _run(day)
    assert healthy["held_back"] is False and healthy["signals"]["default"]["arrived"] > 0 and received == []
    as_of = pd.Timestamp(day, tz="UTC") + DAY
    with book.warehouse() as warehouse:  # the default stream died when the day began; payments still flow
        warehouse.query(
            "DELETE FROM shadowgate.outcomes WHERE event_type = 'default' AND event_timestamp > $since",
            {"since": (as_of - 5 * DAY).to_pydatetime()},
        )
    dead = _run(day, relabel_days=4)  # five days without a default (≈ 2 a day expected in this small world)
    assert dead["held_back"] is True and dead["signals"]["default"]["arrived"] == 0
    assert dead["signals"]["instalment_paid"]["arrived"] > 100 and dead["approved_without_outcome"] == 0
    [alert] = received
    assert "default signals: 0 arrived in the window" in alert["text"] and alert["details"]["expected_default"] > 7
