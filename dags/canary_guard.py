"""
### canary_guard

Watches every **active canary** after each upload of decisions (the asset `prediction_logs`), and stops a canary arm
that misbehaves before any default can show it. It also raises a canary's share one stage at a time.

**Signals.** The treatment arm is compared with the champion arm of the **same allocation period**, on the decisions
of the last hour (and of the whole stage):
* the share of decisions no model score served (the fallback decided);
* the treatment model's p99 scoring latency;
* the approval rate;
* the served scores' distribution (PSI between the arms);
* customers per arm against the designed split (sample-ratio test);
* the early default rate among the approved, once enough early labels exist.

A rate difference stops the arm only when it is beyond its bound **and** significant (Fisher's exact test at
α = 0.001). Thresholds come from the versioned `decisioning/config/canary.yaml` (or `SHADOWGATE_PROMOTION_CANARY_PATH`).

**On a breach** the experiment is **stopped** in the experiment book: every customer is served by the champion again
as soon as the API replicas follow the book (within a second). The book's audit stream records the reasons. An alert
(kind `canary_breach`) is recorded and sent, and it is written into this run's note.

**Staged rollout.** A canary listed under `rollouts` goes through its shares (e.g. 5 → 10 → 20 → 50 %). The guard
raises the share one stage only after the stage has run its `hold_hours` and every signal of the whole stage passes. A
breach stops the canary instead, so the guard never advances past one. Each share change is a new allocation period
for the weekly statistics.

**Params:** `dry_run` (judge and report, change nothing), `now` (ISO instant; empty: the run's instant).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from common.assets import PREDICTION_LOGS
from common.defaults import DEFAULT_ARGS


@dag(
    dag_id="canary_guard",
    schedule=[PREDICTION_LOGS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["shadowgate", "promotion", "monitoring"],
    default_args=DEFAULT_ARGS,
    params={
        "dry_run": Param(False, type="boolean", description="Judge every canary and report; stop nothing, advance "
                         "nothing."),
        "now": Param(
            None,
            type=["null", "string"],
            description="The instant (ISO 8601 with a time zone) the guard judges as of. Empty: the run's instant.",
        ),
    },
)  # fmt: skip
def canary_guard() -> None:
    @task(inlets=[PREDICTION_LOGS])
    def judge_canaries() -> dict[str, object]:
        import datetime as dt

        from airflow.sdk.exceptions import AirflowFailException

        from shadowgate.pipelines.canary import guard_canaries, guard_inputs

        context = get_current_context()
        params = context["params"]
        now = context["dag_run"].run_after
        if params.get("now"):
            try:
                now = dt.datetime.fromisoformat(params["now"])
            except ValueError as error:
                raise AirflowFailException(f"now is not an ISO 8601 instant: {params['now']!r}") from error
            if now.tzinfo is None:
                raise AirflowFailException(f"now needs a time zone (e.g. +00:00): {params['now']!r}")
        with guard_inputs(now=now, dry_run=bool(params.get("dry_run"))) as inputs:
            summary = guard_canaries(**inputs)
        return summary.as_dict()

    @task
    def note_alerts(summary: dict[str, object]) -> str | None:
        from shadowgate.pipelines.run_notes import note_alerts as write_note

        context = get_current_context()
        return write_note(summary, dag_id=context["dag"].dag_id, run_id=context["run_id"])

    note_alerts(judge_canaries())


canary_guard()
