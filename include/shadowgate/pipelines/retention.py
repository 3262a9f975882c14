"""Retention: prediction logs, outcomes, labels and quarantined events kept ``retention_days`` (2 years), MLflow runs
as long, registered model versions and their artifacts forever.

* BigQuery expires the partitions itself (the DDL's ``partition_expiration_days``); :func:`enforce_warehouse_retention`
  brings a table created before the setting to it (``ALTER TABLE … SET OPTIONS``).
* DuckDB has no partition expiry: :func:`enforce_warehouse_retention` deletes the older rows.
* :func:`expire_mlflow_runs` deletes runs that ended before the cutoff, except the runs a registered model version
  was made from (their artifacts are the model). MLflow marks them deleted; ``mlflow gc`` removes them for good.

The ``retention`` DAG runs both daily.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from shadowgate.storage.warehouse import Warehouse

logger = logging.getLogger(__name__)

RETAINED: dict[str, str] = {
    "prediction_logs": "event_timestamp",
    "outcomes": "event_timestamp",
    "labeled_predictions": "event_timestamp",
    "label_revisions": "cohort_start",
    "quarantine": "quarantined_at",
}
"""Each retained table and the column its partitions (and its retention) go by."""


def cutoff_day(now: dt.datetime, retention_days: int) -> dt.date:
    """The first day kept: rows of earlier days are expired."""
    return (now.astimezone(dt.UTC) - dt.timedelta(days=retention_days)).date()


@dataclass(frozen=True)
class RetentionSummary:
    cutoff: dt.date
    retention_days: int
    deleted: dict[str, int]
    """Rows deleted per table (DuckDB); on BigQuery −1: the table's partition expiry was set (it deletes itself)."""

    def as_dict(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff.isoformat(), "retention_days": self.retention_days, "deleted": self.deleted}


def enforce_warehouse_retention(warehouse: Warehouse, *, now: dt.datetime) -> RetentionSummary:
    """Expire what is older than the warehouse's retention (``SHADOWGATE_WAREHOUSE_RETENTION_DAYS``)."""
    warehouse.ensure_tables()
    days = warehouse.sql.retention_days
    cutoff = cutoff_day(now, days)
    deleted: dict[str, int] = {}
    for table, column in RETAINED.items():
        if warehouse.sql.dialect == "bigquery":
            warehouse.execute("maintenance/retention_options", table=table)
            deleted[table] = -1
            continue
        deleted[table] = warehouse.execute("maintenance/expire", {"cutoff": cutoff}, table=table, column=column)
    if any(n > 0 for n in deleted.values()):
        logger.warning("retention: deleted rows older than %s (%d days): %s", cutoff, days, deleted)
    return RetentionSummary(cutoff=cutoff, retention_days=days, deleted=deleted)


def expire_mlflow_runs(
    client: Any, *, now: dt.datetime, retention_days: int, model_name: str, max_runs: int = 50_000
) -> dict[str, Any]:
    """Delete (lifecycle ``deleted``) the runs of every experiment that ended before the cutoff (up to ``max_runs`` a
    day: the next day takes the rest), except the runs registered versions (of any model) were made from. Returns
    what was deleted and kept."""
    from mlflow.entities import ViewType

    cutoff_ms = int(dt.datetime.combine(cutoff_day(now, retention_days), dt.time(), tzinfo=dt.UTC).timestamp() * 1000)
    kept = {v.run_id for v in client.search_model_versions(max_results=10_000) if v.run_id}
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    deleted: list[str] = []
    protected = 0
    if experiments:
        runs = client.search_runs(
            experiments,
            filter_string=f"attributes.end_time < {cutoff_ms}",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=max_runs,
        )
        for run in runs:
            if run.info.end_time is None or run.info.end_time >= cutoff_ms:
                continue
            if run.info.run_id in kept:
                protected += 1
                continue
            client.delete_run(run.info.run_id)
            deleted.append(run.info.run_id)
    if deleted:
        logger.warning("retention: %d MLflow runs older than %d days deleted (mlflow gc removes them)", len(deleted),
                       retention_days)  # fmt: skip
    return {
        "cutoff": cutoff_day(now, retention_days).isoformat(),
        "deleted": len(deleted),
        "kept_for_registered_versions": protected,
        "model_name": model_name,
    }
