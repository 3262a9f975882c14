"""
### join_ground_truth

Joins served decisions (`prediction_logs`) with their outcomes (`outcomes`) once the payment cycle has run, and writes
two labels per **approved** decision into `labeled_predictions` as **versions** (a row per `prediction_id` and
`labeled_as_of`; a new one only when a label changes). Time is the purchase's `event_timestamp` and the outcomes' own
instants, never the wall clock.

* **Early label** — instalment 2 (the first after checkout, due 14 days later) late or missed, or a default, known by
  `event_timestamp + early_maturity_days` (17 = 14 + the 3-day grace) plus the grace window `early_grace_hours` (24 h:
  a feed seconds to hours late still counts). The decision's first version is written then.
* **Final label** — a `default` known by `event_timestamp + maturity_days` (90); NULL until then.
* **Point in time:** a run for the data interval `start`–`end` works *as of* `end`: it labels the decisions whose
  early or final maturity instant falls in `(start, end]` (an instant at exactly midnight belongs to the day that
  ends then), with only the outcomes that had **arrived** by `end` (received by the API, or the `delivered_at` a
  replay states). A backfill of a past day never uses an outcome delivered later; a re-run writes identical rows; a
  mature label never goes back to NULL; the labels known at any instant stay readable (`weekly_performance` reads
  them as of its own run). Denied decisions are never labelled (no credit, no outcome), nor manual reviews (the
  reviewer's answer is not logged): both are counted, and manual reviews granted after review are **excluded from
  the evaluation**.
* **Late outcomes:** a deciding outcome that arrives after its label matured (among the purchases of
  `SHADOWGATE_GROUND_TRUTH_LATE_OUTCOME_LOOKBACK_DAYS`, 180) is counted (`late_early_outcomes`, `late_final_outcomes`),
  the decision gets a new version, and each cohort week whose labels changed is recorded in `label_revisions` (and in
  the report's `revisions`); `weeks_to_reevaluate` lists those evaluated before the revision.
* **Schedule:** daily, one UTC day per run (a data-interval timetable: the run after midnight labels the day that
  ended). No catch-up on its own: fill the past with a **backfill** (below). A manual *Trigger* without a logical
  date labels the last whole day before it.
* **Params:** `maturity_days`, `early_maturity_days`, `early_grace_hours` (empty: `SHADOWGATE_GROUND_TRUTH_*`, 90, 17
  and 24) and `relabel_days` (0): widen the window that many days back to label a range of days again.
* **Report** (the task's return value, also logged): the cohorts' decisions by decision (`approved`,
  `denied_no_outcome_expected`, `manual_review_unlabeled`, `manual_review_with_outcome`), early/final matured and
  defaults, `pending_final`, `approved_without_outcome`, `outcomes_in_window`, late outcomes and `revisions`, each
  signal type's arrivals against its baseline (`signals`), label versions written.
* **Alert:** when more than `SHADOWGATE_GROUND_TRUTH_NO_OUTCOME_ALERT_SHARE` (2 %) of the matured approved decisions
  have no outcome at all, or there is none in the window, or one signal type (`instalment_paid`, `instalment_late`,
  `default`) arrived below `SHADOWGATE_GROUND_TRUTH_SIGNAL_DROP_RATIO` (0.5) of what its rate per purchase and age
  over the `SHADOWGATE_GROUND_TRUTH_SIGNAL_BASELINE_DAYS` (28) before predicts for the window's purchases (and
  improbably so: Poisson p < 0.001) — a dead default
  stream while payments flow — the outcome feed is broken: an alert is sent and the window's labels are **held back**
  (`held_back: true`). Fix the feed, then clear this run. A failed task alerts too.
* **Produces** the asset `labeled_predictions` (for `weekly_performance`).

**Backfill** — each day is its own run and the runs may go in any order (an older as-of never overwrites a row a
later run wrote): the UI's *Backfill* on this DAG, or

```bash
airflow backfill create --dag-id join_ground_truth --from-date 2026-03-01 --to-date 2026-03-31
```

(add `--reprocess-behavior completed` to run days again; a paused DAG's backfill waits until it is unpaused), or the
UI's *Backfill*, or `shadowgate backfill join_ground_truth --from … --to …` (the REST API; it waits and reports every
run). The local stack's Airflow runs on PostgreSQL: backfills are accepted while the scheduler runs; runs that write
the embedded DuckDB warehouse take turns on its file instead of failing on its lock.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task
from common.assets import LABELED_PREDICTIONS
from common.defaults import DEFAULT_ARGS


@dag(
    dag_id="join_ground_truth",
    # A data-interval timetable: each run covers one whole UTC day (a plain "@daily" gives Airflow 3 runs of an
    # instant, without an interval).
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["shadowgate", "warehouse", "evaluation"],
    default_args=DEFAULT_ARGS,
    params={
        "maturity_days": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=366,
            description="Final label: a default known by purchase time + this many days. Empty: "
            "SHADOWGATE_GROUND_TRUTH_MATURITY_DAYS (90).",
        ),
        "early_maturity_days": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=366,
            description="Early label: instalment 2 late or a default, known by purchase time + this many days. "
            "Empty: SHADOWGATE_GROUND_TRUTH_EARLY_MATURITY_DAYS (17).",
        ),
        "early_grace_hours": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            maximum=72,
            description="Early label: a signal known and delivered up to this many hours after the early maturity day "
            "still counts (a feed seconds to hours late). Empty: SHADOWGATE_GROUND_TRUTH_EARLY_GRACE_HOURS (24).",
        ),
        "relabel_days": Param(
            0,
            type="integer",
            minimum=0,
            maximum=366,
            description="Also label again the decisions that matured this many days before the interval (after "
            "outcomes that arrived late). 0: only the interval.",
        ),
    },
)
def join_ground_truth() -> None:
    @task(outlets=[LABELED_PREDICTIONS])
    def label_matured_decisions() -> dict[str, object]:
        from shadowgate.config import AlertSettings, GroundTruthSettings, PathSettings, WarehouseSettings
        from shadowgate.pipelines.ground_truth import join_ground_truth as run
        from shadowgate.pipelines.ground_truth import last_complete_day
        from shadowgate.storage import open_warehouse

        context = get_current_context()
        params = context["params"]
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        if start is None or end is None:  # triggered without a logical date: the last whole day before
            start, end = last_complete_day(context["dag_run"].run_after)
        chosen = ("maturity_days", "early_maturity_days", "early_grace_hours")
        overrides = {k: params[k] for k in chosen if params.get(k) is not None}
        url = AlertSettings().webhook_url
        warehouse = open_warehouse(WarehouseSettings(), home=PathSettings().home)
        try:
            summary = run(
                warehouse,
                interval_start=start,
                interval_end=end,
                settings=GroundTruthSettings(**overrides),
                relabel_days=int(params.get("relabel_days") or 0),
                webhook_url=url.get_secret_value() if url else None,
            )
        finally:
            warehouse.close()
        return summary.as_dict()

    label_matured_decisions()


join_ground_truth()
