"""
### drift_check

Checks **one day of served decisions** against the models' training references: the day's inputs exactly as logged
in `prediction_logs` (the feature contract's drift columns) against the **champion's** reference sample, and every
model's score against **its own** reference's scores.

* **Per column** the population stability index (PSI) on bins fixed by the reference. The reference is binned once
  per model version and stored with its training run in MLflow (`reference/profile.json`).
* **Threshold per column and day:** `max(floor, the column's own wander inside its training window, chance level at
  the day's size)`. `SHADOWGATE_DRIFT_PSI_FLOOR` is 0.1. The chance level spreads `SHADOWGATE_DRIFT_ALPHA` (0.01) over
  the columns, so the day gets **one decision**.
* **Each challenger's inputs against its own reference** too: its drift and unseen-category alerts carry its name
  (`challenger@<version>`) and block its promotion while they hold (`promote_challenger`).
* **Unseen categories are their own check.** A categorical with more than 5 % of its values never seen in training
  alerts (`SHADOWGATE_DRIFT_UNSEEN_ALERT_SHARE`). One stray row is never a verdict.
* **Results:**
  * one MLflow run a day in the experiment `shadowgate/drift`, found by its key `drift/<day>` (a re-run updates it);
    its description is the verdict in a sentence;
  * per-column metrics, `drift_columns.csv` and Evidently's self-contained HTML report (rendered on a seeded sample of
    at most `SHADOWGATE_DRIFT_REPORT_ROWS` rows; the verdict uses every row);
  * the warehouse table `drift_reports` (a re-run replaces the day);
  * the alerts `drift` and `unseen_category`, each sent once while it holds, written into this run's note.
* **Produces** the asset `drift` on a day with drift or unseen categories; `retrain_challenger` runs on it (one
  version per training window, however many drift days trigger it).
* **Schedule:** daily at 02:00 UTC for the day before. **Backfill** days from the UI or
  `shadowgate backfill drift_check --from … --to …`.
* **Params:** `day` (YYYY-MM-DD): check that day instead of the run's interval.

Measured on simulated worlds (`make drift-proof`, README "Drift"):
* no stable day flagged;
* every day of an injected covariate shift or a new merchant category found;
* a concept shock not flagged: it changes outcomes, not inputs; the weekly evaluation sees it.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task
from common.assets import DRIFT
from common.defaults import DEFAULT_ARGS


@dag(
    dag_id="drift_check",
    # One day per run; the run starts at 02:00 UTC, after the uploads of the day before.
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    doc_md=__doc__,
    tags=["shadowgate", "warehouse", "monitoring"],
    default_args=DEFAULT_ARGS,
    params={
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            description="The day (YYYY-MM-DD, UTC) whose decisions to check. Empty: the run's interval (the day "
            "before the run).",
        ),
    },
)
def drift_check() -> None:
    @task
    def check_day() -> dict[str, object]:
        import datetime as dt

        from shadowgate.pipelines.drift import check_drift, drift_inputs

        context = get_current_context()
        given = context["params"].get("day")
        start = context.get("data_interval_start") or context["dag_run"].run_after
        day = dt.date.fromisoformat(given) if given else start.date()  # Airflow checked the Param's date format
        with drift_inputs(day) as inputs:
            summary = check_drift(**inputs)
        return summary.as_dict()

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def drift_found(summary: dict[str, object]) -> bool:
        return bool(summary.get("drift_found"))

    @task(outlets=[DRIFT])
    def announce_drift(summary: dict[str, object]) -> str:
        return f"{summary['day']}: {summary['verdict']}"

    @task
    def note_alerts(summary: dict[str, object]) -> str | None:
        from shadowgate.pipelines.run_notes import note_alerts as write_note

        context = get_current_context()
        return write_note(summary, dag_id=context["dag"].dag_id, run_id=context["run_id"])

    summary = check_day()
    drift_found(summary) >> announce_drift(summary)
    note_alerts(summary)


drift_check()
