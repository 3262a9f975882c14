"""Evaluation results in MLflow: one experiment per A/B experiment, runs found or created by a deterministic key.

MLflow is the results face of the weekly evaluation: a person opens the experiment of an A/B test and finds one run
per model and one comparison run for each cohort week. A re-run (a backfill, a retry) must update those runs, never
add a second one, so every run carries its key in the tag :data:`RUN_KEY_TAG` and is looked up by it first.

A run's value of a metric is MLflow's *latest* one: the largest ``(step, timestamp, value)``. A new run's metrics are
stamped with the step and timestamp the caller derives from the data (the cohort week), so recording the same figures
again changes nothing. A re-run that computed *other* figures (late outcomes, a relabel) must not be stamped alike:
at equal step and timestamp MLflow keeps the larger value (a ``crossed`` of 1 would stick after a relabel turned it
to 0), and MLflow has no call that deletes a metric's history. So :meth:`MlflowResultsStore.record` compares the
run's current values with the new ones and logs only what changed, at the same step with the wall clock's
timestamp (never earlier than the last one): the run then shows the new value, and the metric's history keeps each
revision with the time it was made. A metric the re-run no longer produces is logged as NaN the same way (the run
shows it as not computed, not as its old value). Individual predictions are never runs. This module talks to MLflow
through an explicit client (never MLflow's process-wide tracking URI).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)

RUN_KEY_TAG = "shadowgate.run_key"
"""Tag holding a run's deterministic key (shared with training runs)."""


@dataclass(frozen=True)
class RunRecord:
    """What to record in one run. ``params`` are identity (set at creation, never changed: MLflow refuses a changed
    param); everything that a re-run may recompute goes in ``metrics`` or ``tags``."""

    key: str
    name: str
    params: Mapping[str, str]
    tags: Mapping[str, str]
    metrics: Mapping[str, float]
    step: int
    timestamp_ms: int
    artifacts_dir: Path | None = None


@dataclass(frozen=True)
class RecordedRun:
    """Where a record went."""

    experiment_id: str
    run_id: str
    created: bool
    """False when an existing run with the same key was updated."""


class ResultsStore(Protocol):
    """Where evaluation results go (MLflow in the product; anything with these two calls in unit tests)."""

    def ensure_experiment(self, name: str, *, tags: Mapping[str, str]) -> str:
        """The id of experiment ``name``, created when missing; ``tags`` set (updated) either way."""
        ...

    def record(self, experiment_id: str, record: RunRecord) -> RecordedRun:
        """Find the run keyed ``record.key`` in the experiment, or create it; log the record into it. Afterwards the
        run shows the record's metrics and no other value (a metric the record lacks: NaN)."""
        ...

    def retire(self, *, experiment_prefix: str, tags: Mapping[str, str], keep: Collection[str]) -> list[str]:
        """Delete the runs carrying every tag of ``tags`` in the experiments named ``experiment_prefix…`` but those in
        ``keep`` (what a re-run no longer produces); returns their ids."""
        ...

    def run_url(self, experiment_id: str, run_id: str | None = None) -> str | None:
        """Where a person opens the experiment (or one of its runs) in the UI; None when the store has no UI."""
        ...


class MlflowResultsStore:
    """:class:`ResultsStore` on an MLflow tracking server (or a ``sqlite:///`` store).

    Args:
        tracking_uri: the tracking server or store.
        clock: seconds since the epoch, for the timestamp of a revised metric (tests pass a fixed one).
    """

    def __init__(self, tracking_uri: str, *, clock: Callable[[], float] = time.time) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self._clock = clock
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def ensure_experiment(self, name: str, *, tags: Mapping[str, str]) -> str:
        from mlflow.exceptions import MlflowException

        found = self._client.get_experiment_by_name(name)
        if found is None:
            try:
                experiment_id = self._client.create_experiment(name, tags=dict(tags))
            except MlflowException:
                # Created by a concurrent run between our lookup and the create: use theirs.
                again = self._client.get_experiment_by_name(name)
                if again is None:
                    raise
                experiment_id = again.experiment_id
            else:
                return str(experiment_id)
        else:
            experiment_id = found.experiment_id
            if found.lifecycle_stage == "deleted":
                self._client.restore_experiment(experiment_id)
        for key, value in tags.items():
            self._client.set_experiment_tag(experiment_id, key, value)
        return str(experiment_id)

    def run_url(self, experiment_id: str, run_id: str | None = None) -> str | None:
        if not self.tracking_uri.startswith(("http://", "https://")):
            return None
        return mlflow_ui_url(self.tracking_uri, experiment_id, run_id)

    def find(self, experiment_id: str, key: str) -> str | None:
        """The id of the run keyed ``key`` in the experiment (the oldest one, should two exist), else None. A run
        :meth:`retire` deleted is restored: the figures it holds are produced again."""
        from mlflow.entities import ViewType

        runs = self._client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{RUN_KEY_TAG}` = '{_checked_key(key)}'",
            run_view_type=ViewType.ALL,
            order_by=["attributes.start_time ASC"],
            max_results=2,
        )
        if len(runs) > 1:
            logger.warning("two MLflow runs carry the key %s; updating the oldest (%s)", key, runs[0].info.run_id)
        if not runs:
            return None
        if runs[0].info.lifecycle_stage == "deleted":
            self._client.restore_run(runs[0].info.run_id)
        return str(runs[0].info.run_id)

    def retire(self, *, experiment_prefix: str, tags: Mapping[str, str], keep: Collection[str]) -> list[str]:
        from mlflow.entities import ViewType

        experiments = [
            e.experiment_id
            for e in self._client.search_experiments(filter_string=f"name LIKE '{_checked_key(experiment_prefix)}%'")
        ]
        if not experiments:
            return []
        condition = " AND ".join(f"tags.`{k}` = '{_checked_key(v)}'" for k, v in tags.items())
        retired = []
        for run in self._client.search_runs(
            experiments, filter_string=condition, run_view_type=ViewType.ACTIVE_ONLY, max_results=50_000
        ):
            if run.info.run_id not in keep:
                # A soft delete: the run stays restorable in the UI (and by the next run that produces it again).
                self._client.delete_run(run.info.run_id)
                retired.append(str(run.info.run_id))
        return retired

    def record(self, experiment_id: str, record: RunRecord) -> RecordedRun:
        from mlflow.entities import Metric, Param, RunTag

        run_id = self.find(experiment_id, _checked_key(record.key))
        created = run_id is None
        wanted = {
            key: float(value)
            for key, value in record.metrics.items()
            if value is not None and not math.isinf(float(value))
        }
        if run_id is None:
            run = self._client.create_run(
                experiment_id,
                start_time=record.timestamp_ms,
                tags={RUN_KEY_TAG: record.key, "mlflow.runName": record.name},
                run_name=record.name,
            )
            run_id = run.info.run_id
            self._client.log_batch(run_id, params=[Param(k, str(v)) for k, v in record.params.items()])
            stamp = record.timestamp_ms
            metrics = [Metric(key, value, stamp, record.step) for key, value in wanted.items()]
        else:
            found = self._client.get_run(run_id)
            self._client.update_run(run_id, status="RUNNING")
            revised = revisions(found.data.metrics, wanted)
            # The run's end time is the stamp of its last revision: a new one is later than it (and than the week),
            # whatever this machine's clock says.
            last = max(found.info.end_time or 0, record.timestamp_ms)
            stamp = max(int(self._clock() * 1000), last + 1) if revised else last
            metrics = [Metric(key, value, stamp, record.step) for key, value in revised.items()]
        # The name is a tag too: a run named by an earlier version of the code gets the current name.
        tags = [RunTag(k, str(v)) for k, v in {**record.tags, "mlflow.runName": record.name}.items()]
        # log_batch takes at most 1000 metrics and 100 tags a call.
        for start in range(0, len(metrics), 1000):
            self._client.log_batch(run_id, metrics=metrics[start : start + 1000])
        for start in range(0, len(tags), 100):
            self._client.log_batch(run_id, tags=tags[start : start + 100])
        if record.artifacts_dir is not None:
            self._client.log_artifacts(run_id, str(record.artifacts_dir))
        self._client.set_terminated(run_id, status="FINISHED", end_time=stamp)
        return RecordedRun(experiment_id=experiment_id, run_id=run_id, created=created)


UI_VIEW = "workflowType=machine_learning"
"""MLflow 3's UI opens in its GenAI view (traces) unless the link asks for the model-training one; the choice is the
browser's, made by its switch or by this query parameter (an experiment's ``mlflow.experimentKind`` tag does not)."""


def mlflow_ui_url(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The UI link of an experiment (or one of its runs) that opens on its runs, not on the GenAI traces."""
    base = f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}"
    return f"{base}/runs/{run_id}?{UI_VIEW}" if run_id else f"{base}?{UI_VIEW}"


def revisions(current: Mapping[str, float], wanted: Mapping[str, float]) -> dict[str, float]:
    """What to log so that a run showing ``current`` shows ``wanted``: the metrics whose value changed or is new, and
    NaN for those ``wanted`` no longer has (NaN equals NaN here: a figure still not computable is no revision)."""

    def same(a: float, b: float) -> bool:
        return a == b or (math.isnan(a) and math.isnan(b))

    out = {key: value for key, value in wanted.items() if key not in current or not same(current[key], value)}
    out.update({key: math.nan for key, value in current.items() if key not in wanted and not math.isnan(value)})
    return out


_KEY = re.compile(r"[A-Za-z0-9_.:@/+=-]{1,250}")


def _checked_key(key: str) -> str:
    """``key`` if it can stand in an MLflow filter literal as it is (keys are built by code, never typed by people:
    MLflow's filter syntax has no reliable escape for a quote)."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"run key {key!r}: use 1-250 letters, digits and _ . : @ / + = -")
    return key
