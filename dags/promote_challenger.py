"""
### promote_challenger

The **promotion gate**: decides, for every challenger, whether it replaces the champion, and moves the aliases of
`bnpl_default` when it does. It runs each time `weekly_performance` updates `model_metrics` (the asset), and by hand
(with `dry_run` to see the verdict without moving anything).

**The gates** come from a versioned file (`decisioning/config/gates.yaml`, or `SHADOWGATE_PROMOTION_GATES_PATH`); its
version and hash are recorded with every verdict. For each challenger version against the champion version, on the
final label, over the weeks of their comparison plan:

* **comparison:** the plan's verdict is *superior* by the margin (δ = 0.01 AUC) at its latest look; α was split
  between the challengers compared with the same champion when the plan was made;
* **calibration:** Brier difference (challenger − champion), pooled over the plan's weeks, below 0.002 at 95 %;
* **business:** at each policy's cut-offs on the same matured requests, the approval rate moves by at most 5 points
  and the realised loss per applicant grows by at most 10 %;
* **latency:** the challenger's p99 scoring latency (from the logged latencies, since the plan's first week) within
  5 ms;
* **split:** a canary's sample-ratio check passes;
* **drift:** no open drift or unseen-category alert about the challenger.

**What it does:**
* **promote** (every gate passes): `@champion` moves to the challenger, the old champion gets `@previous`, the
  challenger alias is removed; a canary experiment is completed. The running API swaps models with no failed request.
* **retire** (the plan ended *futile* or *not shown*: inconclusive never ships): the challenger alias is removed with
  its reasons; `@champion` is untouched.
* **wait** (no verdict yet, or a gate not passed yet): nothing moves; the verdict so far is recorded.
* **first deployment** (no champion yet): the challenger becomes champion without a comparison.

Every move is a `deployment_events` row whose evidence holds each gate's value, threshold and verdict, and the same
record is on the model version's tags. Each decision is an MLflow run in `shadowgate/promotion`; this run's note says
what was decided. Undo a promotion with `shadowgate rollback --reason …` (or `POST /v1/admin/rollback`).

**Params:** `dry_run` (decide and report, move nothing), `as_of` (ISO instant; empty: the run's instant).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from common.assets import MODEL_METRICS
from common.defaults import DEFAULT_ARGS


@dag(
    dag_id="promote_challenger",
    schedule=[MODEL_METRICS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["shadowgate", "promotion"],
    default_args=DEFAULT_ARGS,
    params={
        "dry_run": Param(
            False,
            type="boolean",
            description="Decide and report every gate, but move no alias and record nothing.",
        ),
        "as_of": Param(
            None,
            type=["null", "string"],
            description="The instant (ISO 8601, e.g. 2026-11-30T00:00:00+00:00) the evidence is read as of (the "
            "week of latencies before it). Empty: the run's instant.",
        ),
    },
)
def promote_challenger() -> None:
    @task(inlets=[MODEL_METRICS])
    def decide_and_move() -> dict[str, object]:
        import datetime as dt

        from airflow.sdk.exceptions import AirflowFailException

        from shadowgate.pipelines.promotion import promote_challengers, promotion_inputs

        context = get_current_context()
        params = context["params"]
        as_of = context["dag_run"].run_after
        if params.get("as_of"):
            try:
                as_of = dt.datetime.fromisoformat(params["as_of"])
            except ValueError as error:
                raise AirflowFailException(f"as_of is not an ISO 8601 instant: {params['as_of']!r}") from error
            if as_of.tzinfo is None:
                raise AirflowFailException(f"as_of needs a time zone (e.g. +00:00): {params['as_of']!r}")
        with promotion_inputs(as_of=as_of, dry_run=bool(params.get("dry_run"))) as inputs:
            summary = promote_challengers(**inputs)
        return summary.as_dict()

    @task
    def note_decision(summary: dict[str, object]) -> str | None:
        from shadowgate.pipelines.run_notes import render_promotion_note, write_note

        context = get_current_context()
        return write_note(render_promotion_note(summary), dag_id=context["dag"].dag_id, run_id=context["run_id"])

    note_decision(decide_and_move())


promote_challenger()
