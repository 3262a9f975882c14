"""Run the uploader in a process of its own that SIGKILLs itself at a chosen point (the exactly-once tests).

    python -m tests.integration.crash_uploader REDIS_URL DUCKDB_PATH {after_stage,after_merge,never} [TABLE]

``after_stage``: killed once the batch is in a staging table, before the MERGE. ``after_merge``: killed once the
MERGE committed, before the XACK. The kill hits the first batch of ``TABLE`` (default prediction_logs).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import redis

from shadowgate.pipelines.upload import GROUP, upload_streams
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.redis_streams import StreamReader
from shadowgate.storage.warehouse import MergeResult, default_sql_dir

PREDICTIONS = "test:predictions"
OUTCOMES = "test:outcomes"


class _Crashing(DuckDBWarehouse):
    def __init__(self, path: Path, *, crash_at: str, table: str) -> None:
        super().__init__(path, sql_dir=default_sql_dir())
        self.crash_at = crash_at
        self.table = table

    def stage(self, table: str, batch: Any, *, batch_id: str) -> str:
        staging = super().stage(table, batch, batch_id=batch_id)
        if self.crash_at == "after_stage" and table == self.table:
            os.kill(os.getpid(), signal.SIGKILL)
        return staging

    def merge(self, table: str, *, staging: str, min_ts: Any = None, max_ts: Any = None) -> MergeResult:
        result = super().merge(table, staging=staging, min_ts=min_ts, max_ts=max_ts)
        if self.crash_at == "after_merge" and table == self.table:
            os.kill(os.getpid(), signal.SIGKILL)
        return result


def main(argv: list[str]) -> None:
    redis_url, path, crash_at = argv[:3]
    table = argv[3] if len(argv) > 3 else "prediction_logs"
    client = redis.Redis.from_url(redis_url)
    warehouse = _Crashing(Path(path), crash_at=crash_at, table=table)
    try:
        summary = upload_streams(
            readers=[
                (StreamReader(client, stream=PREDICTIONS, group=GROUP, consumer="uploader"), "prediction"),
                (StreamReader(client, stream=OUTCOMES, group=GROUP, consumer="uploader"), "outcome"),
            ],
            warehouse=warehouse,
            batch_size=int(os.environ.get("UPLOAD_BATCH_SIZE", "100")),
            read_size=int(os.environ.get("UPLOAD_READ_SIZE", "100")),
        )
        print(summary.as_dict())
    finally:
        warehouse.close()


if __name__ == "__main__":
    main(sys.argv[1:])
