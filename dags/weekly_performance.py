"""
### weekly_performance

Evaluates the **champion and every challenger on the identical matured requests** of a cohort week (purchases
Monday to Monday by `event_timestamp`), with paired statistics, and publishes the week in **MLflow** and in the
warehouse table `model_metrics`.

* **Which weeks:** a run as of its data interval end *T* evaluates, per label, the last week whose purchases had all
  matured by *T*: the week ending on or before *T* − 17 days for the **early** label (instalment 2 late or a
  default), *T* − 90 days for the **final** label (a default). Each (week, label) is evaluated once, at its maturity,
  with only the labels known at *T*: a backfill gives the same figures as the live run did.
* **Population:** decisions the champion approved whose label has matured (`labeled_predictions`, written by
  `join_ground_truth`): denied applicants got no credit and have no outcome. Every figure says which rows it covers.
* **Per model:** AUC, PR-AUC, KS, Brier, log loss, calibration (ECE, reliability curve); at each decision policy's
  thresholds the approval rate, default rate among approved, expected and realised loss; the same by segment
  (new/returning, merchant category, amount band, channel), with Simpson's reversals flagged.
* **Per comparison** (champion vs each challenger — an experiment of the book, or `champion-vs-<alias>`): DeLong's
  paired AUC test, McNemar on approve/decline, a paired bootstrap CI of the Brier difference, Holm across the week's
  comparisons, the sample-ratio check of a canary's arms, and the **look of the comparison's plan**: H0 ΔAUC ≤ δ
  (`SHADOWGATE_EVALUATION_AUC_MARGIN`, 0.01) against H1 ΔAUC ≥ δ + MDE, recorded in `comparison_plans` at the
  first evaluation; the weeks' DeLong differences combined by inverse variance; O'Brien–Fleming efficacy and a
  non-binding futility boundary at the information gathered; a verdict (*superior*, *futile*, *not_shown*) ends the
  plan, later weeks carry it. Only the **final** label decides; the early label is monitoring.
* **MLflow:** one experiment per A/B experiment (`shadowgate/<experiment>`, tagged with its models, allocation,
  success metric and recorded plan); per week and label one run per model and one comparison run holding the
  HTML report, the charts and `segments.csv`. Runs are found by a deterministic key: a re-run updates them.
* **Selection:** every figure is computed on the approved share of the week's applicants; the week's approval rate
  and denied count (every decision) are written next to each model's and comparison's figures (`cohort_*`), in
  MLflow and in the report.
* **Alerts** (table `alerts`, each condition sent once while it holds, again only after it resolved): a model's AUC
  more than 5 % and 3 standard errors below **its own first 4 evaluated weeks** (same population and label, never
  the validation AUC on all applicants), or its defaults 15 % and 3 SE above what it predicts relative to those weeks
  (a concept shift) — the final label an error, the early label a warning; a comparison's **verdict**, once, at the look
  that reached it (with the next step: promote, retire, keep); a sample-ratio mismatch. A failed task alerts too.
  An alert raised by a run is written into **that run's note** (the run stays green: the figures are right, the note
  says what to look at and what to do) and into the description of the MLflow run it concerns.
  How long a comparison will take: `shadowgate plan-experiment`.
* **Schedule:** weekly, Monday 00:00 UTC (one week per run); no catch-up on its own — **backfill** past weeks:

```bash
airflow backfill create --dag-id weekly_performance --from-date 2026-04-06 --to-date 2026-06-29
```

(the dates are the runs' interval starts; add `--reprocess-behavior completed` to evaluate weeks again), or the
UI's *Backfill*, or `shadowgate backfill weekly_performance --from … --to …` (the REST API; it waits and reports
every run). The local stack's Airflow runs on PostgreSQL: backfills are accepted while the scheduler runs.

* **Params:** `cohort_week` (a Monday: evaluate that week instead of the ones due), `labels`.
* **Consumes** the asset `labeled_predictions`; **produces** `model_metrics` (for the promotion gate, which is not
  built yet).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task
from common.assets import LABELED_PREDICTIONS, MODEL_METRICS
from common.defaults import DEFAULT_ARGS


@dag(
    dag_id="weekly_performance",
    # A data-interval timetable: each run covers one Monday-to-Monday week; its end is the run's as-of instant.
    schedule=CronDataIntervalTimetable("0 0 * * 1", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 5, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["shadowgate", "warehouse", "evaluation"],
    default_args=DEFAULT_ARGS,
    params={
        "cohort_week": Param(
            None,
            type=["null", "string"],
            format="date",
            description="A Monday (YYYY-MM-DD): evaluate the purchases of that week, as of this run's interval end, "
            "instead of the weeks whose labels just matured. Empty: the weeks due.",
        ),
        "labels": Param(
            ["early", "final"],
            type="array",
            items={"type": "string", "enum": ["early", "final"]},
            description="Which labels to evaluate: early (instalment 2 late or a default by day 17) and/or final "
            "(a default by day 90).",
        ),
    },
)
def weekly_performance() -> None:
    @task(inlets=[LABELED_PREDICTIONS], outlets=[MODEL_METRICS])
    def evaluate_matured_weeks() -> dict[str, object]:
        import datetime as dt

        from airflow.sdk.exceptions import AirflowFailException

        from shadowgate.pipelines.performance import evaluation_inputs
        from shadowgate.pipelines.performance import weekly_performance as run

        context = get_current_context()
        params = context["params"]
        end = context.get("data_interval_end") or context["dag_run"].run_after
        cohort = dt.date.fromisoformat(params["cohort_week"]) if params.get("cohort_week") else None
        if cohort is not None and cohort.weekday() != 0:
            # A wrong Param is not worth three retries: fail at once, saying why.
            raise AirflowFailException(f"cohort_week must be a Monday, {cohort} is a {cohort:%A}")
        with evaluation_inputs(as_of=end, week_start=cohort, labels=params.get("labels") or None) as inputs:
            summary = run(**inputs)
        return summary.as_dict()

    @task
    def note_alerts(summary: dict[str, object]) -> str | None:
        from shadowgate.pipelines.run_notes import note_alerts as write_note

        context = get_current_context()
        return write_note(summary, dag_id=context["dag"].dag_id, run_id=context["run_id"])

    note_alerts(evaluate_matured_weeks())


weekly_performance()
