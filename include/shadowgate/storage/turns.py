"""Turns on the embedded DuckDB file: one writing process at a time, the others wait instead of failing.

DuckDB lets one process open a database file for writing; a second ``duckdb.connect`` fails at once with "Could not
set lock on file". Airflow runs several tasks at a time (a backfill, four at once), so without turns they fail and
only retries save them. Every :class:`~shadowgate.storage.duckdb.DuckDBWarehouse` first takes an exclusive
``flock`` on a side file (``<database>.lock``), waits for it up to a timeout, and holds it until it closes. The
holder's pid and task are written into the side file, so a waiting process can say whom it waits for. Connections
of one process share one turn (DuckDB allows several connections to a file within a process). BigQuery needs none
of this: its adapter runs in parallel.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

POLL_S = 0.2


class WarehouseBusyError(RuntimeError):
    """The turn on the warehouse file did not come within the timeout."""


@dataclass
class _Held:
    handle: IO[str]
    count: int


_held: dict[Path, _Held] = {}
_guard = threading.Lock()


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


def _holder(handle: IO[str]) -> str:
    try:
        handle.seek(0)
        return handle.read().strip() or "another process"
    except OSError:
        return "another process"


def _who() -> str:
    task = "/".join(
        os.environ[k]
        for k in ("AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_DAG_RUN_ID", "AIRFLOW_CTX_TASK_ID")
        if k in os.environ
    )
    return f"pid {os.getpid()}" + (f" ({task})" if task else "")


def acquire(database: Path, *, timeout_s: float) -> float:
    """Take this process's turn on ``database`` (waiting up to ``timeout_s``); returns the seconds waited.

    Raises:
        WarehouseBusyError: another process kept its turn longer than ``timeout_s``.
    """
    key = database.resolve()
    with _guard:
        held = _held.get(key)
        if held is not None:
            held.count += 1
            return 0.0
    key.parent.mkdir(parents=True, exist_ok=True)
    handle = lock_path(key).open("a+")
    started = time.monotonic()
    announced = False
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited > timeout_s:
                    raise WarehouseBusyError(
                        f"the warehouse {key} stayed in use by {_holder(handle)} for {waited:.0f} s"
                        " (SHADOWGATE_WAREHOUSE_DUCKDB_LOCK_TIMEOUT_S)"
                    ) from None
                if not announced:
                    logger.warning("warehouse %s in use by %s: waiting for its turn", key, _holder(handle))
                    announced = True
                time.sleep(POLL_S)
    except BaseException:
        handle.close()
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(_who())
    handle.flush()
    with _guard:
        _held[key] = _Held(handle=handle, count=1)
    waited = time.monotonic() - started
    if announced:
        logger.info("warehouse %s: our turn after %.1f s", key, waited)
    return waited


def release(database: Path) -> None:
    """Give the turn back (after the last connection of this process closed)."""
    key = database.resolve()
    with _guard:
        held = _held.get(key)
        if held is None:
            return
        held.count -= 1
        if held.count > 0:
            return
        del _held[key]
    try:
        held.handle.seek(0)
        held.handle.truncate()
    except OSError:
        pass
    fcntl.flock(held.handle, fcntl.LOCK_UN)
    held.handle.close()
