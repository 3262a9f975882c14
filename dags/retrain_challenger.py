"""
### retrain_challenger

Trains the next **challenger** on the decisions **exactly as production logged them**. It points `@challenger` at
the new version of `bnpl_default` only if a replay says it is not worse than the champion. `@champion` is never
touched: only the first deployment, the promotion gate (`promote_challenger`) or `shadowgate rollback` moves it.

* **Trigger:**
  * the asset `drift`: `drift_check` found drift or unseen categories;
  * monthly, on the 1st at 04:00 UTC;
  * by hand, with the Params.
* **Data:**
  * The approved decisions of the window whose **final** label is known at the run's instant
    (`labeled_predictions`, labels as known then).
  * Their features are the ones logged when each decision was served (`prediction_logs.features`, never
    recomputed). The new reference sample for `drift_check` is drawn from their inputs.
  * The **window** is `SHADOWGATE_RETRAIN_TRAINING_DAYS` (182) ending at the Monday on or before *as_of − 90 days*.
    The window is the run's key, so a drift-triggered run and the monthly run of the same week register **one**
    version.
* **Before training:**
  * A **skip** happens on too few matured defaults to train on or to replay (`SHADOWGATE_RETRAIN_MIN_*_DEFAULTS`). It
    also happens when the window's defaults a week are too few for the weekly comparison plan to reach its power
    within its looks. The reason goes to this log and to an MLflow run of `bnpl_training`.
  * A degenerate fit is **refused** and the task fails with its reason, which alerts; nothing is registered. That
    covers too few defaults after the split, a feature missing or constant, and a validation AUC below
    `SHADOWGATE_TRAIN_MIN_VALID_AUC`.
* **Replay before shadowing:**
  * The last `SHADOWGATE_RETRAIN_REPLAY_DAYS` (28) of the window are held out. The new version scores them, and
    DeLong's paired test compares it with the champion's **logged** scores.
  * A version worse than the champion by more than the comparison margin (0.01 AUC) is registered **archived**, with
    its reasons, and never takes `@challenger`.
* **Lineage** is on the MLflow run and the version: the window, the rows and defaults, the data query, and the parent
  champion. The move of `@challenger` is also in the warehouse's `deployment_events`.
* **Cold start:** the first models at `make up` come from the simulated history, because nothing is logged yet.

**Params:**
* `as_of`: ISO instant; empty means the run's `run_after`.
* `window_end`: a date; empty means derived.
* `training_days`: empty means the setting.
* `kind`: the model family.
* `force`: train a new version even though this window already has one.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task
from common.assets import DRIFT
from common.defaults import DEFAULT_ARGS


@dag(
    dag_id="retrain_challenger",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 4 1 * *", timezone="UTC"), assets=[DRIFT]),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["shadowgate", "training"],
    params={
        "as_of": Param("", type="string", description="Train as of this UTC instant (ISO 8601); empty: run_after."),
        "window_end": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Last day (exclusive) of the training window, YYYY-MM-DD; empty: the Monday on or before "
            "as_of − 90 days (every run of one week reads the same window).",
        ),
        "training_days": Param(
            None,
            type=["null", "integer"],
            minimum=28,
            description="Days of matured decisions to read; empty: SHADOWGATE_RETRAIN_TRAINING_DAYS (182).",
        ),
        "kind": Param(
            "hist_gradient_boosting",
            type="string",
            enum=["hist_gradient_boosting", "logistic_scorecard"],
            description="Model family of the new challenger.",
        ),
        "force": Param(
            False,
            type="boolean",
            description="Train a new version even though this window already has one (a fixed feed, a new recipe).",
        ),
    },
    default_args=DEFAULT_ARGS,
)
def retrain_challenger() -> None:
    @task
    def train_challenger() -> dict[str, object]:
        import datetime as dt

        from airflow.sdk.exceptions import AirflowFailException

        from shadowgate.pipelines.retrain import retrain_from_warehouse, retrain_inputs

        context = get_current_context()
        params = context["params"]
        given = params.get("as_of") or ""
        try:
            as_of = dt.datetime.fromisoformat(given) if given else context["dag_run"].run_after
            end = dt.date.fromisoformat(params["window_end"]) if params.get("window_end") else None
        except ValueError as error:
            # A wrong Param is not worth three retries: fail at once, saying why.
            raise AirflowFailException(f"as_of must be ISO 8601 and window_end YYYY-MM-DD: {error}") from None
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=dt.UTC)
        with retrain_inputs(
            as_of=as_of,
            window_end=end,
            training_days=params.get("training_days"),
            kind=params.get("kind"),
            force=bool(params.get("force")),
        ) as inputs:
            return retrain_from_warehouse(**inputs)

    train_challenger()


retrain_challenger()
