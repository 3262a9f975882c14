"""Storage adapters: the warehouse (DuckDB embedded, BigQuery in production) and the Redis streams reader."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shadowgate.config import WarehouseSettings
    from shadowgate.storage.warehouse import Warehouse


def open_warehouse(settings: WarehouseSettings, *, home: Path) -> Warehouse:
    """The warehouse the settings name (``duckdb`` by default)."""
    from shadowgate.storage.warehouse import default_sql_dir

    sql_dir = settings.sql_dir or default_sql_dir()
    if settings.backend == "duckdb":
        from shadowgate.storage.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(
            settings.resolved_duckdb_path(home),
            sql_dir=sql_dir,
            dataset=settings.dataset,
            threads=settings.duckdb_threads,
            lock_timeout_s=settings.duckdb_lock_timeout_s,
            retention_days=settings.retention_days,
        )
    from shadowgate.storage.bigquery import BigQueryWarehouse

    return BigQueryWarehouse(
        project=settings.bigquery_project,
        dataset=settings.dataset,
        location=settings.bigquery_location,
        sql_dir=sql_dir,
        api_endpoint=settings.bigquery_api_endpoint,
        retention_days=settings.retention_days,
    )
