"""The warehouse interface, its SQL (written once, in BigQuery dialect) and the tables' Arrow schemas.

Every statement lives under ``include/sql/`` as BigQuery SQL with ``${name}`` placeholders: ``${dataset}`` (the
dataset, or DuckDB schema), ``${source}`` (the staged batch a MERGE reads), the column lists of the event tables
derived from the event models (``${prediction_logs_columns}``, … :func:`shadowgate.events.schemas.ddl_placeholders`)
and those of the batch (``${columns}``, ``${source_columns}``). :class:`SqlLibrary` renders a statement and, for
DuckDB, transpiles it with sqlglot.

Loads are two steps — :meth:`Warehouse.stage` a batch into a staging table, then :meth:`Warehouse.merge` it into
the target on its key — so that a retry of either step, or of both, leaves each row in the table once.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from shadowgate.events.schemas import (
    EVENT_TABLES,
    OUTCOMES,
    PREDICTION_LOGS,
    TIMESTAMP,
    ddl_placeholders,
    table_schema,
)

logger = logging.getLogger(__name__)

QUARANTINE = "quarantine"
DEPLOYMENT_EVENTS = "deployment_events"
LABELED_PREDICTIONS = "labeled_predictions"
LABEL_REVISIONS = "label_revisions"
MODEL_METRICS = "model_metrics"
COMPARISON_PLANS = "comparison_plans"
ALERTS = "alerts"
DRIFT_REPORTS = "drift_reports"
PERFORMANCE_ESTIMATES = "performance_estimates"
TABLES = (
    PREDICTION_LOGS,
    OUTCOMES,
    QUARANTINE,
    LABELED_PREDICTIONS,
    LABEL_REVISIONS,
    MODEL_METRICS,
    COMPARISON_PLANS,
    DRIFT_REPORTS,
    PERFORMANCE_ESTIMATES,
    DEPLOYMENT_EVENTS,
    "experiments",
    ALERTS,
)
"""Every table, in creation order (DDL file ``ddl/<table>.sql``)."""

MERGE_KEYS = {
    **{name: table.key for name, table in EVENT_TABLES.items()},
    QUARANTINE: "quarantine_id",
    DEPLOYMENT_EVENTS: "event_id",
    MODEL_METRICS: "metric_id",
    COMPARISON_PLANS: "plan_id",
    ALERTS: "alert_key",
    DRIFT_REPORTS: "report_id",
    PERFORMANCE_ESTIMATES: "estimate_id",
}
"""Tables loaded by stage + MERGE, and the key each is merged on (``merge/<table>.sql``)."""

DERIVED_TABLES = (LABELED_PREDICTIONS, LABEL_REVISIONS)
"""Tables a pipeline computes from other tables inside the warehouse. Their columns are declared here too
(:func:`arrow_schema`)."""

RELAID_WHEN_EMPTY = (*DERIVED_TABLES, MODEL_METRICS, DRIFT_REPORTS)
"""Tables an earlier version created empty with another layout (placeholders no code wrote): ``ensure_tables``
re-creates such a table while it is empty, and stops with a clear error once it holds rows (:func:`outdated_layout`),
before it adds missing columns to the loaded tables."""


class WarehouseError(RuntimeError):
    """A warehouse statement failed."""


# ------------------------------------------------------------------------------------------------ schemas

_QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("quarantine_id", pa.string(), nullable=False),
        pa.field("stream", pa.string(), nullable=False),
        pa.field("stream_entry_id", pa.string(), nullable=False),
        pa.field("event_id", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=False),
        pa.field("quarantined_at", TIMESTAMP, nullable=False),
    ]
)


_MODEL_METRICS_SCHEMA = pa.schema(
    [
        pa.field("metric_id", pa.string(), nullable=False),
        pa.field("experiment_id", pa.string(), nullable=False),
        pa.field("cohort_start", pa.date32(), nullable=False),
        pa.field("cohort_end", pa.date32(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("population", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("alias", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("segment", pa.string(), nullable=False),
        pa.field("segment_value", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("n", pa.int64(), nullable=False),
        pa.field("n_positive", pa.int64()),
        pa.field("as_of", TIMESTAMP, nullable=False),
        pa.field("mlflow_run_id", pa.string()),
    ]
)


_COMPARISON_PLANS_SCHEMA = pa.schema(
    [
        pa.field("plan_id", pa.string(), nullable=False),
        pa.field("experiment_id", pa.string(), nullable=False),
        pa.field("comparison", pa.string(), nullable=False),
        pa.field("control_alias", pa.string(), nullable=False),
        pa.field("treatment_alias", pa.string(), nullable=False),
        pa.field("started_on", pa.date32(), nullable=False),
        pa.field("decision_label", pa.string(), nullable=False),
        pa.field("margin", pa.float64(), nullable=False),
        pa.field("mde", pa.float64(), nullable=False),
        pa.field("alpha", pa.float64(), nullable=False),
        pa.field("power", pa.float64(), nullable=False),
        pa.field("max_looks", pa.int64(), nullable=False),
        pa.field("max_information", pa.float64(), nullable=False),
        pa.field("futility", pa.bool_(), nullable=False),
        pa.field("comparisons", pa.int64(), nullable=False),
        pa.field("spending", pa.string(), nullable=False),
        pa.field("created_at", TIMESTAMP, nullable=False),
        pa.field("description", pa.string(), nullable=False),
    ]
)


_DRIFT_REPORTS_SCHEMA = pa.schema(
    [
        pa.field("report_id", pa.string(), nullable=False),
        pa.field("window_start", pa.date32(), nullable=False),
        pa.field("window_end", pa.date32(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("column_name", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("statistic", pa.float64()),
        pa.field("threshold", pa.float64()),
        pa.field("drifted", pa.bool_(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
        pa.field("unseen_share", pa.float64()),
        pa.field("mlflow_run_id", pa.string()),
        pa.field("computed_at", TIMESTAMP, nullable=False),
    ]
)

_PERFORMANCE_ESTIMATES_SCHEMA = pa.schema(
    [
        pa.field("estimate_id", pa.string(), nullable=False),
        pa.field("day", pa.date32(), nullable=False),
        pa.field("alias", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("population", pa.string(), nullable=False),
        pa.field("n", pa.int64()),
        *(
            pa.field(name, pa.float64())
            for name in ("expected_defaults", "default_rate", "default_rate_low", "default_rate_high")
        ),
        *(pa.field(name, pa.float64()) for name in ("auc", "auc_low", "auc_high")),
        pa.field("computed_at", TIMESTAMP),
        pa.field("realised_n", pa.int64()),
        pa.field("realised_defaults", pa.int64()),
        pa.field("realised_default_rate", pa.float64()),
        pa.field("realised_auc", pa.float64()),
        pa.field("realised_as_of", TIMESTAMP),
    ]
)

_ALERTS_SCHEMA = pa.schema(
    [
        *(pa.field(name, pa.string(), nullable=False) for name in ("alert_key", "kind", "subject", "condition")),
        *(pa.field(name, pa.string(), nullable=False) for name in ("severity", "source", "title", "text")),
        pa.field("first_raised_at", TIMESTAMP, nullable=False),
        pa.field("last_seen_at", TIMESTAMP, nullable=False),
        pa.field("resolved_at", TIMESTAMP),
        pa.field("times_seen", pa.int64(), nullable=False),
        pa.field("times_raised", pa.int64(), nullable=False),
        pa.field("notified_at", TIMESTAMP),
        # JSON text here: Parquet has no JSON type (the MERGE parses it into the JSON column).
        pa.field("details", pa.string()),
    ]
)


_LABEL_REVISIONS_SCHEMA = pa.schema(
    [
        pa.field("cohort_start", pa.date32(), nullable=False),
        pa.field("cohort_end", pa.date32(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("revision", pa.int64(), nullable=False),
        pa.field("detected_at", TIMESTAMP, nullable=False),
        pa.field("labels_revised", pa.int64(), nullable=False),
        pa.field("late_outcomes", pa.int64(), nullable=False),
    ]
)


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of a batch for ``table`` (the same columns, in the same order, as its DDL). An event table's
    comes from its event model (:mod:`shadowgate.events.schemas`)."""
    if table in EVENT_TABLES:
        return table_schema(table)
    if table == QUARANTINE:
        return _QUARANTINE_SCHEMA
    if table == MODEL_METRICS:
        return _MODEL_METRICS_SCHEMA
    if table == COMPARISON_PLANS:
        return _COMPARISON_PLANS_SCHEMA
    if table == ALERTS:
        return _ALERTS_SCHEMA
    if table == DRIFT_REPORTS:
        return _DRIFT_REPORTS_SCHEMA
    if table == PERFORMANCE_ESTIMATES:
        return _PERFORMANCE_ESTIMATES_SCHEMA
    if table == DEPLOYMENT_EVENTS:
        # evidence is JSON text here: Parquet has no JSON type (the MERGE parses it into the JSON column).
        return pa.schema(
            [
                pa.field("event_id", pa.string(), nullable=False),
                pa.field("occurred_at", TIMESTAMP, nullable=False),
                pa.field("action", pa.string(), nullable=False),
                pa.field("model_name", pa.string(), nullable=False),
                pa.field("alias", pa.string(), nullable=False),
                pa.field("from_version", pa.string()),
                pa.field("to_version", pa.string()),
                pa.field("reason", pa.string(), nullable=False),
                pa.field("actor", pa.string(), nullable=False),
                pa.field("evidence", pa.string()),
            ]
        )
    if table == LABELED_PREDICTIONS:
        return _labeled_predictions_schema()
    if table == LABEL_REVISIONS:
        return _LABEL_REVISIONS_SCHEMA
    raise KeyError(f"no schema for table {table!r} (tables: {', '.join([*MERGE_KEYS, *DERIVED_TABLES])})")


def _labeled_predictions_schema() -> pa.Schema:
    """``ddl/labeled_predictions.sql``'s columns (``scores`` is prediction_logs' own type)."""
    strings = ("prediction_id", "transaction_id", "customer_id_hash")
    logged = ("served_by", "decision", "policy_name", "policy_version")
    segments = ("customer_type", "merchant_category", "channel")
    return pa.schema(
        [
            *(pa.field(name, pa.string(), nullable=False) for name in strings),
            pa.field("event_timestamp", TIMESTAMP, nullable=False),
            pa.field("served_at", TIMESTAMP, nullable=False),
            *(pa.field(name, pa.string(), nullable=False) for name in logged),
            pa.field("experiment_id", pa.string()),
            pa.field("arm", pa.string()),
            pa.field("propensity", pa.float64()),
            table_schema(PREDICTION_LOGS).field("scores"),
            *(pa.field(name, pa.string(), nullable=False) for name in segments),
            pa.field("amount", pa.float64(), nullable=False),
            pa.field("amount_band", pa.string(), nullable=False),
            pa.field("early_defaulted", pa.bool_(), nullable=False),
            pa.field("early_matured_at", TIMESTAMP, nullable=False),
            pa.field("final_defaulted", pa.bool_()),
            pa.field("final_matured_at", TIMESTAMP),
            pa.field("outcome_events", pa.int64(), nullable=False),
            pa.field("labeled_as_of", TIMESTAMP, nullable=False),
        ]
    )


def outdated_layout(table: str, existing: pa.Schema, rows: Callable[[], int]) -> bool:
    """Whether ``table`` (:data:`RELAID_WHEN_EMPTY`), found with columns ``existing``, must be re-created from its
    DDL: it has another layout (a column the DDL does not have, or a required one missing; new nullable columns are
    only added) and holds no rows (``rows`` is only asked then).

    Raises:
        WarehouseError: the columns differ and the table holds rows (migrate it by hand).
    """
    expected = arrow_schema(table).names
    if existing.names == expected:
        return False
    if not set(existing.names) - set(expected):
        try:
            missing_columns(arrow_schema(table), existing)
        except WarehouseError:
            pass  # a required column is missing: another layout
        else:
            return False  # only new nullable columns: added in place by ensure_tables
    held = rows()
    if held:
        raise WarehouseError(
            f"{table} has the columns {existing.names}, its DDL {expected}, and holds {held} rows: migrate it by hand"
        )
    return True


def missing_columns(expected: pa.Schema, existing: pa.Schema) -> list[tuple[str, pa.DataType]]:
    """What a table created by an older version lacks: ``(path, type)`` of each column, and each field of a struct
    column, that ``expected`` has and ``existing`` does not (``feature_set``, ``features.new_feature``), in order.

    Raises:
        WarehouseError: a missing column is required (the rows already there have no value for it).
    """
    out: list[tuple[str, pa.DataType]] = []
    for column in expected:
        if column.name not in existing.names:
            if not column.nullable:
                raise WarehouseError(
                    f"column {column.name} is required and missing from the existing table: migrate it by hand "
                    "(add it with a value for the existing rows) or load into a new dataset"
                )
            out.append((column.name, column.type))
            continue
        have = existing.field(column.name).type
        if pa.types.is_struct(column.type) and pa.types.is_struct(have):
            have_names = {f.name for f in have}
            out.extend((f"{column.name}.{f.name}", f.type) for f in column.type if f.name not in have_names)
    return out


# ------------------------------------------------------------------------------------------------ SQL


def default_sql_dir() -> Path:
    """``include/sql`` next to the package (source checkout, editable install), else under the working directory."""
    beside = Path(__file__).resolve().parents[2] / "sql"
    return beside if beside.is_dir() else Path.cwd() / "include" / "sql"


INCLUDED_QUERY = "queries_"
"""Prefix of a placeholder that includes a shipped query (``${queries_ground_truth_labels}``)."""


def used_params(sql: str, params: Mapping[str, Any] | None, *, marker: str) -> dict[str, Any]:
    """The ``params`` that rendered ``sql`` refers to (``marker`` + name: ``@`` in BigQuery, ``$`` in DuckDB). A
    pipeline passes one set of parameters to statements that use different subsets; DuckDB refuses extra ones."""
    if not params:
        return {}
    return {k: v for k, v in params.items() if re.search(rf"{re.escape(marker)}{re.escape(k)}\b", sql)}


class SqlLibrary:
    """The shipped statements, rendered for one dataset and one dialect (``bigquery`` or ``duckdb``)."""

    def __init__(self, root: Path, *, dataset: str, dialect: str, retention_days: int = 730) -> None:
        if dialect not in ("bigquery", "duckdb"):
            raise ValueError(f"unknown dialect {dialect!r}")
        if retention_days < 1:
            raise ValueError("retention_days must be >= 1")
        self.retention_days = retention_days
        if not (root / "ddl").is_dir():
            raise FileNotFoundError(f"no warehouse SQL under {root} (set SHADOWGATE_WAREHOUSE_SQL_DIR)")
        self.root = root
        self.dataset = dataset
        self.dialect = dialect

    def names(self) -> list[str]:
        """Every shipped statement, as ``folder/name`` (e.g. ``merge/outcomes``)."""
        return sorted(str(p.relative_to(self.root).with_suffix("")) for p in self.root.glob("*/*.sql"))

    def source(self, name: str) -> str:
        return (self.root / f"{name}.sql").read_text()

    def template(self, name: str, **values: str) -> str:
        """The statement ``name`` with its placeholders filled, in BigQuery dialect (what :meth:`render` transpiles).

        ``${queries_<query>}`` stands for the shipped query ``queries/<query>``, filled the same way: a statement
        that needs another's rows (a MERGE and a report reading the same labels) includes it rather than copy it.
        """
        template = string.Template(self.source(name))
        derived = ddl_placeholders()
        # Only what the statement uses is derived: a MERGE is rendered for every batch.
        defaults: dict[str, str] = {}
        for key in template.get_identifiers():
            if key in values:
                continue
            if key in derived:
                defaults[key] = derived[key]()
            elif key.startswith(INCLUDED_QUERY):
                included = self.template(f"queries/{key.removeprefix(INCLUDED_QUERY)}", **values)
                defaults[key] = f"\n{included.strip()}\n"
        return template.substitute(
            {"dataset": self.dataset, "retention_days": str(self.retention_days), **defaults, **values}
        )

    def render(self, name: str, **values: str) -> str:
        """The statement ``name`` with its placeholders filled, in this library's dialect."""
        sql = self.template(name, **values)
        if self.dialect == "bigquery":
            return sql
        return transpile(sql)

    def merge(self, table: str, *, source: str, columns: Sequence[str]) -> str:
        """The MERGE of the staged batch ``source`` (a table reference in this dialect) into ``table``."""
        return self.render(
            f"merge/{table}",
            source=source,
            columns=", ".join(columns),
            source_columns=", ".join(f"s.{c}" for c in columns),
        )


@functools.lru_cache(maxsize=256)
def transpile(sql: str) -> str:
    """BigQuery SQL → DuckDB SQL. Partitioning and clustering have no DuckDB equivalent and are dropped."""
    import sqlglot
    from sqlglot.errors import ErrorLevel

    statements = sqlglot.transpile(sql, read="bigquery", write="duckdb", unsupported_level=ErrorLevel.IGNORE)
    return ";\n".join(statements)


# ------------------------------------------------------------------------------------------------ interface


@dataclass(frozen=True)
class MergeResult:
    """What one MERGE did."""

    table: str
    staged: int
    inserted: int


class Warehouse(Protocol):
    """What the pipelines need from a warehouse. Adapters: :mod:`shadowgate.storage.duckdb`,
    :mod:`shadowgate.storage.bigquery`."""

    sql: SqlLibrary

    def ensure_tables(self) -> None:
        """Create the dataset and every table that does not exist yet (idempotent)."""
        ...

    def stage(self, table: str, batch: pa.Table, *, batch_id: str) -> str:
        """Load ``batch`` (of :func:`arrow_schema` ``(table)``) where a MERGE can read it; returns its name.

        BigQuery: a load job into a staging table that expires. DuckDB: the Arrow batch itself, registered for this
        connection (DuckDB scans Arrow in place; a copy would only cost time).
        """
        ...

    def merge(
        self,
        table: str,
        *,
        staging: str,
        min_ts: Any = None,
        max_ts: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> MergeResult:
        """MERGE a staged batch into ``table`` on its key, then drop what was staged. Idempotent: rows whose key is
        already in the table are skipped. ``min_ts`` / ``max_ts`` bound the batch's partition column (pruning);
        ``params`` are further parameters the table's MERGE uses (``model_metrics``: the slice it replaces)."""
        ...

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run rendered SQL (in this warehouse's dialect) and return the result."""
        ...

    def run(self, name: str, params: Mapping[str, Any] | None = None, **values: str) -> pa.Table:
        """Render the shipped statement ``name`` and run it."""
        ...

    def execute(self, name: str, params: Mapping[str, Any] | None = None, **values: str) -> int:
        """Render the shipped data-changing statement ``name`` (a MERGE, INSERT, UPDATE, DELETE), run it as one
        transaction and return the number of rows it changed. Parameters it does not use are left out."""
        ...

    def count(self, table: str) -> int:
        """Rows in ``table``."""
        ...

    def drop_stale_staging(self) -> list[str]:
        """Drop staging tables left by a crashed load; returns their names."""
        ...

    def close(self) -> None: ...


STAGING_PREFIX = "_staging_"
"""Staging tables are ``<dataset>._staging_<table>_<batch id>``."""


def check_batch(table: str, batch: pa.Table) -> None:
    """Refuse a batch that is not loaded by stage + merge, whose columns are not ``table``'s, or that holds a key
    twice (the MERGE would insert both: :func:`unique_on_key` first). Every adapter calls it."""
    if table not in MERGE_KEYS:
        raise ValueError(f"{table!r} is not loaded by stage + merge")
    expected = arrow_schema(table).names
    if batch.schema.names != expected:
        raise ValueError(f"batch columns {batch.schema.names} differ from {table}'s {expected}")
    key = MERGE_KEYS[table]
    if batch.num_rows and pc.count_distinct(batch.column(key)).as_py() != batch.num_rows:
        raise ValueError(f"batch holds a {key} more than once (unique_on_key keeps the first)")


def unique_on_key(table: str, batch: pa.Table) -> pa.Table:
    """``batch`` with each merge key once: the row of the earliest stream entry (a re-sent event), else the first.

    Cheap when there is nothing to drop (one hash count); sorting happens only when a key repeats.
    """
    key = MERGE_KEYS[table]
    if batch.num_rows < 2 or pc.count_distinct(batch.column(key)).as_py() == batch.num_rows:
        return batch
    position = pa.array(range(batch.num_rows), pa.int64())
    order: list[tuple[str, str]] = [(key, "ascending")]
    columns = {key: batch.column(key), "_position": position}
    if "stream_entry_id" in batch.schema.names:
        # Stream ids are "<ms>-<seq>": compared as numbers, not text ("10-0" comes after "9-0").
        parts = pc.split_pattern(batch.column("stream_entry_id"), "-", max_splits=1)
        columns["_ms"] = pc.cast(pc.list_element(parts, 0), pa.int64())
        columns["_seq"] = pc.cast(pc.list_element(parts, 1), pa.int64())
        order += [("_ms", "ascending"), ("_seq", "ascending")]
    order.append(("_position", "ascending"))
    keys = pa.table(columns).sort_by(order)
    sorted_key = keys.column(key).combine_chunks()
    first = pc.not_equal(sorted_key[1:], sorted_key[:-1])
    keep = pa.concat_arrays([pa.array([True]), first])
    kept = pc.filter(keys.column("_position").combine_chunks(), keep)
    return batch.take(kept.take(pc.sort_indices(kept)))  # in the batch's order


_EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_LATEST = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)


def merge_bounds(min_ts: Any, max_ts: Any) -> dict[str, Any]:
    """The MERGE's ``@min_ts`` / ``@max_ts`` parameters: the batch's time range, or all time when not given."""
    return {"min_ts": min_ts or _EARLIEST, "max_ts": max_ts or _LATEST}


def staging_name(table: str, batch_id: str) -> str:
    safe = "".join(c if c.isalnum() else "_" for c in batch_id)
    return f"{STAGING_PREFIX}{table}_{safe}"
