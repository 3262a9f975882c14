"""The embedded warehouse: one DuckDB file, the shipped BigQuery SQL transpiled by sqlglot, Arrow in and out.

DuckDB takes one writing process at a time: each pipeline task opens the file, works, and closes it; a process that
finds the file in use waits for its turn (:mod:`shadowgate.storage.turns`) instead of failing.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from shadowgate.events.schemas import bigquery_type
from shadowgate.storage import turns
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


def _connect(path: str, *, deadline: float) -> Any:
    """``duckdb.connect``, retried while a process that takes no turns (a DuckDB shell, an older version of this
    adapter) holds the file."""
    import duckdb

    delay = 0.2
    while True:
        try:
            return duckdb.connect(path)
        except duckdb.IOException as error:
            if "lock" not in str(error).lower() or time.monotonic() + delay > deadline:
                raise
            logger.info("warehouse %s locked by a process outside the turns (%s); retrying", path, error)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class DuckDBWarehouse:
    """The warehouse in one DuckDB file (``:memory:`` for a throw-away one).

    Args:
        path: the database file (its folder is created).
        sql_dir: the shipped SQL (``include/sql``).
        dataset: the schema holding every table.
        threads: DuckDB worker threads (None: one per core). The uploader does best with 1: it decodes the next
            batch while DuckDB writes this one, and extra DuckDB threads only fight it for the cores.
        lock_timeout_s: how long to wait for the file while another process has it open.

    Raises:
        turns.WarehouseBusyError: the file stayed in use for ``lock_timeout_s``.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        sql_dir: Path,
        dataset: str = "shadowgate",
        threads: int | None = None,
        lock_timeout_s: float = 1800.0,
        retention_days: int = 730,
    ) -> None:
        self.path = path
        self._turn: Path | None = None
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._turn = Path(path)
        started = time.monotonic()
        if self._turn is not None:
            turns.acquire(self._turn, timeout_s=lock_timeout_s)
        try:
            self._con = _connect(str(path), deadline=started + lock_timeout_s)
        except BaseException:
            if self._turn is not None:
                turns.release(self._turn)
            raise
        self.waited_s = time.monotonic() - started
        """Seconds this connection waited for the file (another process had it)."""
        # Offline: a TimeZone in connect(config=...) makes DuckDB try to download an extension; SET does not.
        self._con.execute("SET TimeZone = 'UTC'")
        if threads is not None:
            self._con.execute(f"SET threads = {int(threads)}")
        # Names are catalog-qualified: a file called like the schema (shadowgate.duckdb) would make "shadowgate"
        # ambiguous between the database and the schema.
        catalog = self._con.execute("SELECT current_database()").fetchall()[0][0]
        self.dataset = dataset
        self.qualified = f'"{catalog}"."{dataset}"'
        self.sql = SqlLibrary(sql_dir, dataset=f"{catalog}.{dataset}", dialect="duckdb", retention_days=retention_days)
        self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {self.qualified}")
        self._staged: dict[str, int] = {}

    def close(self) -> None:
        self._con.close()
        if self._turn is not None:
            turns.release(self._turn)
            self._turn = None

    def __enter__(self) -> DuckDBWarehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ tables

    def ensure_tables(self) -> None:
        for table in TABLES:
            self._execute(self.sql.render(f"ddl/{table}"))
        for table in RELAID_WHEN_EMPTY:
            ref = f'{self.qualified}."{table}"'
            existing = self._con.sql(f"SELECT * FROM {ref} LIMIT 0").to_arrow_table().schema
            if outdated_layout(table, existing, functools.partial(self.count, table)):
                self._execute(f"DROP TABLE {ref}")
                self._execute(self.sql.render(f"ddl/{table}"))
                logger.warning("%s: re-created with its current columns (the empty table had others)", table)
        for table in MERGE_KEYS:
            self._add_missing_columns(table)

    def _add_missing_columns(self, table: str) -> None:
        """Bring a table an older version created up to its columns now (CREATE TABLE IF NOT EXISTS left it as it
        was): a new nullable column, or a new field of a struct (a feature of a newly known set), is added; the rows
        already there hold NULL in it."""
        import sqlglot

        ref = f'{self.qualified}."{table}"'
        existing = self._con.sql(f"SELECT * FROM {ref} LIMIT 0").to_arrow_table().schema
        for path, arrow_type in missing_columns(arrow_schema(table), existing):
            kind = sqlglot.exp.DataType.build(bigquery_type(arrow_type), dialect="bigquery").sql(dialect="duckdb")
            self._execute(f"ALTER TABLE {ref} ADD COLUMN IF NOT EXISTS {path} {kind}")
            logger.warning("%s: added column %s %s (NULL in the rows loaded before)", table, path, kind)

    def count(self, table: str) -> int:
        return self._scalar(f'SELECT COUNT(*) FROM {self.qualified}."{table}"')

    def _scalar(self, sql: str) -> int:
        # fetchall, not fetchone: DuckDB 2.0 refuses new work on a connection whose last result is not exhausted.
        rows = self._con.execute(sql).fetchall()
        return int(rows[0][0])

    def tables(self) -> list[str]:
        rows = self._con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY table_name",
            [self.dataset],
        ).fetchall()
        return [r[0] for r in rows]

    # ------------------------------------------------------------------------------------------------ loading

    def stage(self, table: str, batch: pa.Table, *, batch_id: str) -> str:
        check_batch(table, batch)
        staging = staging_name(table, batch_id)
        # DuckDB scans the Arrow batch in place; nothing is written until the MERGE commits.
        self._con.register(staging, batch)
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
        if staging not in self._staged:
            raise WarehouseError(f"nothing staged as {staging}")
        columns = arrow_schema(table).names
        sql = self.sql.merge(table, source=f'"{staging}"', columns=columns)
        bounds = merge_bounds(min_ts, max_ts) if "$min_ts" in sql else {}
        params = {**bounds, **used_params(sql, params, marker="$")}
        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            inserted = int(con.execute(sql, params).fetchall()[0][0])  # DuckDB answers a MERGE with its row count
            con.execute("COMMIT")
        except Exception as error:
            con.execute("ROLLBACK")
            raise WarehouseError(f"MERGE into {table} from {staging} failed: {error}") from error
        finally:
            con.unregister(staging)
        return MergeResult(table=table, staged=self._staged.pop(staging), inserted=inserted)

    def drop_stale_staging(self) -> list[str]:
        # Staged batches live in this connection only; tables are what an older version of this adapter left.
        stale = [t for t in self.tables() if t.startswith(STAGING_PREFIX)]
        for name in stale:
            self._con.execute(f'DROP TABLE {self.qualified}."{name}"')
        return stale

    # ------------------------------------------------------------------------------------------------ queries

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        try:
            relation = self._con.sql(sql, params=dict(params) if params else None)
            if relation is None:  # a statement without a result
                return pa.table({})
            return relation.to_arrow_table()
        except Exception as error:
            raise WarehouseError(f"query failed: {error}\n{sql}") from error

    def run(self, name: str, params: Mapping[str, Any] | None = None, **values: str) -> pa.Table:
        sql = self.sql.render(name, **values)
        return self.query(sql, used_params(sql, params, marker="$") if params else None)

    def execute(self, name: str, params: Mapping[str, Any] | None = None, **values: str) -> int:
        sql = self.sql.render(name, **values)
        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            rows = con.execute(sql, used_params(sql, params, marker="$")).fetchall()
            con.execute("COMMIT")
        except Exception as error:
            con.execute("ROLLBACK")
            raise WarehouseError(f"{name} failed: {error}\n{sql}") from error
        return int(rows[0][0]) if rows else 0  # DuckDB answers a MERGE / INSERT / UPDATE with its row count

    def _execute(self, sql: str) -> None:
        try:
            self._con.execute(sql)
        except Exception as error:
            raise WarehouseError(f"statement failed: {error}\n{sql}") from error
