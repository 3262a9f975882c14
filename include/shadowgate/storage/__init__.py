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

        return DuckDBWarehouse(settings.resolved_duckdb_path(home), sql_dir=sql_dir, dataset=settings.dataset)
    from shadowgate.storage.warehouse import WarehouseError

    raise WarehouseError("the BigQuery backend is not built yet (issue 4, in progress): use backend=duckdb")
