"""Several processes on the embedded DuckDB warehouse at once (as Airflow runs tasks): they take turns, none fails.

Real processes, a real DuckDB file: without turns the second ``duckdb.connect`` fails with "Could not set lock".
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.turns import WarehouseBusyError, lock_path
from shadowgate.storage.warehouse import default_sql_dir

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from shadowgate.storage.duckdb import DuckDBWarehouse
    from shadowgate.storage.warehouse import default_sql_dir

    path, name, hold_s = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    with DuckDBWarehouse(path, sql_dir=default_sql_dir(), lock_timeout_s=120) as w:
        print(f"open {name} {time.time():.3f} waited {w.waited_s:.3f}", flush=True)
        w._con.execute("CREATE TABLE IF NOT EXISTS writes (name VARCHAR, written DOUBLE)")
        w._con.execute("INSERT INTO writes VALUES (?, ?)", [name, time.time()])
        time.sleep(hold_s)
        print(f"close {name} {time.time():.3f}", flush=True)
    """
)


def _writer(path: Path, name: str, hold_s: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), name, str(hold_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_four_processes_at_once_each_get_their_turn_and_none_fails(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    writers = [_writer(path, f"task-{i}", 0.5) for i in range(4)]
    spans = {}
    for w in writers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        opened = next(line.split() for line in out.splitlines() if line.startswith("open"))
        closed = next(line.split() for line in out.splitlines() if line.startswith("close"))
        spans[opened[1]] = (float(opened[2]), float(closed[2]))
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        rows = warehouse._con.execute("SELECT name FROM writes ORDER BY name").fetchall()
    assert rows == [(f"task-{i}",) for i in range(4)]  # every write landed, once
    ordered = sorted(spans.values())
    for (_, end), (start, _) in itertools.pairwise(ordered):
        assert start >= end - 0.05, f"two processes had the file at once: {ordered}"  # one at a time


def test_a_process_waits_for_the_holder_and_says_whom_it_waits_for(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    holder = _writer(path, "holder", 3.0)
    assert holder.stdout is not None
    assert holder.stdout.readline().startswith("open holder")  # it has its turn now
    assert lock_path(path).read_text().startswith(f"pid {holder.pid}")
    # (an Airflow task's ids follow the pid when the holder runs in one: a DAG test earlier in the session sets them)
    with pytest.raises(WarehouseBusyError, match=rf"in use by pid {holder.pid}( \([^)]*\))? for \d+ s"):
        DuckDBWarehouse(path, sql_dir=default_sql_dir(), lock_timeout_s=0.5)
    started = time.monotonic()
    with DuckDBWarehouse(path, sql_dir=default_sql_dir(), lock_timeout_s=60) as warehouse:
        waited = time.monotonic() - started
        assert warehouse._con.execute("SELECT count(*) FROM writes").fetchall() == [(1,)]
    assert 0.5 < waited < 30 and warehouse.waited_s == pytest.approx(waited, abs=0.5)
    holder.communicate(timeout=30)
    assert holder.returncode == 0


def test_connections_of_one_process_share_its_turn(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    with (
        DuckDBWarehouse(path, sql_dir=default_sql_dir(), lock_timeout_s=1) as first,
        DuckDBWarehouse(path, sql_dir=default_sql_dir(), lock_timeout_s=1) as second,
    ):
        first._con.execute("CREATE TABLE t (n INT)")
        first._con.execute("INSERT INTO t VALUES (1)")
        first._con.execute("CHECKPOINT")
        assert second._con.execute("SELECT n FROM t").fetchall() == [(1,)]
    other = _writer(path, "after", 0.0)  # the turn is given back once the last connection closed
    _, err = other.communicate(timeout=60)
    assert other.returncode == 0, err
