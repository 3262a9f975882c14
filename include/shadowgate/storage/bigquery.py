"""The production warehouse: BigQuery through google-cloud-bigquery, the shipped SQL as written.

Loading a batch is two jobs: a Parquet load job into a staging table (created first with the target's schema, expiring
after a day, so a crash leaves nothing that lasts), then the shipped MERGE as a query job on the event id, bounded to
the batch's partition range so BigQuery prunes the target. Every call has a timeout: the client's default retry would
otherwise keep a failing call going for minutes.

Credentials are the usual Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS`` or the workload's
identity). With ``api_endpoint`` (a local emulator in tests) anonymous credentials are used.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from shadowgate.events.schemas import TIMESTAMP, bigquery_type
from shadowgate.storage.warehouse import (
    MERGE_KEYS,
    RELAID_WHEN_EMPTY,
    STAGING_PREFIX,
    TABLES,
    MergeResult,
    SqlLibrary,
    WarehouseError,
    arrow_schema,
    check_batch,
    merge_bounds,
    missing_columns,
    outdated_layout,
    staging_name,
    used_params,
)

logger = logging.getLogger(__name__)

STAGING_TTL = dt.timedelta(days=1)

_ARROW_OF = {
    "STRING": pa.string(),
    "INTEGER": pa.int64(),
    "INT64": pa.int64(),
    "FLOAT": pa.float64(),
    "FLOAT64": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "BOOL": pa.bool_(),
    "TIMESTAMP": TIMESTAMP,
    "DATE": pa.date32(),
}


def _arrow_field(field: Any) -> pa.Field:
    """A BigQuery ``SchemaField`` as Arrow (types outside the event tables' vocabulary as null: only names and
    structs matter to :func:`missing_columns`)."""
    if field.field_type in ("RECORD", "STRUCT"):
        kind = pa.struct([_arrow_field(f) for f in field.fields])
    else:
        kind = _ARROW_OF.get(field.field_type, pa.null())
    if field.mode == "REPEATED":
        kind = pa.list_(kind)
    # Arrow's null type cannot be NOT NULL; such a column is only compared by name.
    return pa.field(field.name, kind, nullable=field.mode != "REQUIRED" or kind == pa.null())


def _param(name: str, value: Any) -> Any:
    from google.cloud import bigquery

    if isinstance(value, dt.datetime):
        return bigquery.ScalarQueryParameter(name, "TIMESTAMP", value)
    if isinstance(value, bool):
        return bigquery.ScalarQueryParameter(name, "BOOL", value)
    if isinstance(value, int):
        return bigquery.ScalarQueryParameter(name, "INT64", value)
    if isinstance(value, float):
        return bigquery.ScalarQueryParameter(name, "FLOAT64", value)
    if isinstance(value, dt.date):
        return bigquery.ScalarQueryParameter(name, "DATE", value)
    if isinstance(value, list | tuple):
        kind = "INT64" if value and isinstance(value[0], int) else "STRING"
        return bigquery.ArrayQueryParameter(name, kind, list(value))
    return bigquery.ScalarQueryParameter(name, "STRING", value)


def staging_schema(fields: Sequence[Any]) -> list[Any]:
    """The schema of a staging table for a target with ``fields``: the same, but JSON columns as STRING.

    A load job cannot fill a JSON column from Parquet; such columns are staged as JSON text and the MERGE parses them
    (``PARSE_JSON`` in ``merge/<table>.sql``).
    """
    from google.cloud import bigquery

    return [bigquery.SchemaField(f.name, "STRING", mode=f.mode) if f.field_type == "JSON" else f for f in fields]


class BigQueryWarehouse:
    """The warehouse in one BigQuery dataset.

    Args:
        project: Google Cloud project (None: the credentials' default).
        dataset: dataset holding every table (created when missing).
        location: the dataset's location when it is created.
        sql_dir: the shipped SQL.
        api_endpoint: another API endpoint (an emulator); anonymous credentials then.
        client: an existing ``bigquery.Client`` (overrides project / endpoint).
        timeout_s: timeout of every API call and job wait.
    """

    def __init__(
        self,
        *,
        project: str | None,
        dataset: str,
        location: str = "EU",
        sql_dir: Path,
        api_endpoint: str | None = None,
        client: Any = None,
        timeout_s: float = 120.0,
        retention_days: int = 730,
    ) -> None:
        from google.cloud import bigquery

        if client is None:
            if api_endpoint:
                from google.api_core.client_options import ClientOptions
                from google.auth.credentials import AnonymousCredentials

                client = bigquery.Client(
                    project=project or "test-project",
                    credentials=AnonymousCredentials(),
                    client_options=ClientOptions(api_endpoint=api_endpoint),
                )
            else:
                client = bigquery.Client(project=project, location=location)
        self.client = client
        self.project = client.project
        self.dataset = dataset
        self.location = location
        self.timeout_s = timeout_s
        self._staged: dict[str, int] = {}
        self.sql = SqlLibrary(
            sql_dir, dataset=f"{self.project}.{dataset}", dialect="bigquery", retention_days=retention_days
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> BigQueryWarehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ref(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"

    # ------------------------------------------------------------------------------------------------ tables

    def ensure_tables(self) -> None:
        from google.cloud import bigquery

        dataset = bigquery.Dataset(f"{self.project}.{self.dataset}")
        dataset.location = self.location
        self.client.create_dataset(dataset, exists_ok=True, timeout=self.timeout_s)
        for table in TABLES:
            self._run(self.sql.render(f"ddl/{table}"))
        for table in RELAID_WHEN_EMPTY:
            target = self.client.get_table(self._ref(table), timeout=self.timeout_s)
            existing = pa.schema([_arrow_field(f) for f in target.schema])
            if outdated_layout(table, existing, functools.partial(self.count, table)):
                self.client.delete_table(self._ref(table), timeout=self.timeout_s)
                self._run(self.sql.render(f"ddl/{table}"))
                logger.warning("%s: re-created with its current columns (the empty table had others)", table)
        for table in MERGE_KEYS:
            self._add_missing_columns(table)

    def _add_missing_columns(self, table: str) -> None:
        """Bring a table an older version created up to its columns now (see the DuckDB adapter): new columns by
        ``ALTER TABLE``, new fields of a struct column by a schema update (BigQuery's DDL cannot add those)."""
        from google.cloud import bigquery

        target = self.client.get_table(self._ref(table), timeout=self.timeout_s)
        missing = missing_columns(arrow_schema(table), pa.schema([_arrow_field(f) for f in target.schema]))
        columns = [(path, kind) for path, kind in missing if "." not in path]
        if columns:
            adds = ", ".join(f"ADD COLUMN IF NOT EXISTS {path} {bigquery_type(kind)}" for path, kind in columns)
            self._run(f"ALTER TABLE `{self._ref(table)}` {adds}")
            target = self.client.get_table(self._ref(table), timeout=self.timeout_s)
        nested: dict[str, list[Any]] = {}
        for path, kind in missing:
            if "." in path:
                parent, name = path.split(".", 1)
                if pa.types.is_nested(kind):
                    raise WarehouseError(f"{table}: cannot add the nested field {path} {kind} by a schema update")
                nested.setdefault(parent, []).append(bigquery.SchemaField(name, bigquery_type(kind), mode="NULLABLE"))
        if nested:
            target.schema = [
                bigquery.SchemaField(
                    f.name, f.field_type, mode=f.mode, description=f.description, fields=(*f.fields, *nested[f.name])
                )
                if f.name in nested
                else f
                for f in target.schema
            ]
            self.client.update_table(target, ["schema"], timeout=self.timeout_s)
        for path, kind in missing:
            logger.warning("%s: added column %s %s (NULL in the rows loaded before)", table, path, bigquery_type(kind))

    def count(self, table: str) -> int:
        rows = self.query(f"SELECT COUNT(*) AS n FROM `{self._ref(table)}`")
        return int(rows.column("n")[0].as_py())

    def tables(self) -> list[str]:
        listed = self.client.list_tables(f"{self.project}.{self.dataset}", timeout=self.timeout_s)
        return sorted(t.table_id for t in listed)

    # ------------------------------------------------------------------------------------------------ loading

    def stage(self, table: str, batch: pa.Table, *, batch_id: str) -> str:
        from google.cloud import bigquery

        check_batch(table, batch)
        staging = staging_name(table, batch_id)
        target = self.client.get_table(self._ref(table), timeout=self.timeout_s)
        staged = bigquery.Table(self._ref(staging), schema=staging_schema(target.schema))
        staged.expires = dt.datetime.now(dt.UTC) + STAGING_TTL
        self.client.create_table(staged, exists_ok=True, timeout=self.timeout_s)
        buffer = io.BytesIO()
        pq.write_table(batch, buffer)
        buffer.seek(0)
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        )
        try:
            job = self.client.load_table_from_file(buffer, self._ref(staging), job_config=config)
            job.result(timeout=self.timeout_s)
        except Exception as error:
            raise WarehouseError(f"load of {batch.num_rows} rows into {staging} failed: {error}") from error
        self._staged[staging] = batch.num_rows
        return staging

    def merge(
        self,
        table: str,
        *,
        staging: str,
        min_ts: Any = None,
        max_ts: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> MergeResult:
        columns = arrow_schema(table).names
        sql = self.sql.merge(table, source=f"`{self._ref(staging)}`", columns=columns)
        bounds = merge_bounds(min_ts, max_ts) if "@min_ts" in sql else {}
        params = {**bounds, **used_params(sql, params, marker="@")}
        # Known from stage(); counting the staging table would be one more query job per batch.
        staged = self._staged.pop(staging, None)
        job = self._run(sql, params)
        if staged is None:
            staged = int(job.num_dml_affected_rows or 0)
        inserted = int(job.num_dml_affected_rows or 0)
        self.client.delete_table(self._ref(staging), not_found_ok=True, timeout=self.timeout_s)
        return MergeResult(table=table, staged=staged, inserted=inserted)

    def drop_stale_staging(self) -> list[str]:
        stale = [t for t in self.tables() if t.startswith(STAGING_PREFIX)]
        for name in stale:
            self.client.delete_table(self._ref(name), not_found_ok=True, timeout=self.timeout_s)
        return stale

    # ------------------------------------------------------------------------------------------------ queries

    def _run(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(query_parameters=[_param(k, v) for k, v in (params or {}).items()])
        try:
            job = self.client.query(sql, job_config=config, timeout=self.timeout_s)
            job.result(timeout=self.timeout_s)
        except Exception as error:
            raise WarehouseError(f"query failed: {error}\n{sql}") from error
        return job

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        job = self._run(sql, params)
        try:
            return job.result(timeout=self.timeout_s).to_arrow(create_bqstorage_client=False)
        except Exception as error:
            raise WarehouseError(f"reading the result failed: {error}\n{sql}") from error

    def run(self, name: str, params: Mapping[str, Any] | None = None, **values: str) -> pa.Table:
        sql = self.sql.render(name, **values)
        return self.query(sql, used_params(sql, params, marker="@") if params else None)

    def execute(self, name: str, params: Mapping[str, Any] | None = None, **values: str) -> int:
        # One DML statement is one atomic job in BigQuery: no explicit transaction needed.
        sql = self.sql.render(name, **values)
        job = self._run(sql, used_params(sql, params, marker="@"))
        return int(job.num_dml_affected_rows or 0)
