"""The Redis checks on a real Redis and a real DuckDB warehouse: memory near its limit, the eviction policy, a
lagging consumer group, an idle one that blocks trimming; each sent once, held, then resolved."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shadowgate.pipelines.redis_ops import check_redis, redis_figures
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import default_sql_dir
from tests.redis_server import RedisServer

STREAM = "shadowgate:predictions"
T0 = dt.datetime(2026, 12, 7, 10, tzinfo=dt.UTC)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


def _run(client: Any, warehouse: DuckDBWarehouse, at: dt.datetime, **bounds: Any) -> dict[str, Any]:
    settings = {"memory_fraction": 0.8, "max_lag": 100, "max_idle_h": 1.0, **bounds}
    return check_redis(client=client, warehouse=warehouse, streams=[STREAM], at=at, webhook_url=None, **settings)


def test_memory_policy_lag_and_idle_groups_are_alerted_once_and_resolved(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    client = redis_server.client()
    client.config_set("maxmemory-policy", "allkeys-lru")
    client.config_set("maxmemory", str(8 << 20))
    client.xgroup_create(STREAM, "uploader", id="0", mkstream=True)
    for i in range(300):
        client.xadd(STREAM, {"i": str(i)})
    client.xreadgroup("uploader", "worker-1", {STREAM: ">"}, count=10)  # a consumer that read a little, then stopped
    ballast = "x" * 65536
    base = client.info("memory")["used_memory"]
    for i in range(int((0.85 * (8 << 20) - base) / 65536) + 1):  # past 80 % of the limit
        client.set(f"ballast:{i}", ballast)
    with DuckDBWarehouse(tmp_path / "w.duckdb", sql_dir=default_sql_dir()) as warehouse:
        first = _run(client, warehouse, T0, max_idle_h=0.0)
        assert sorted(first["sent"]) == [
            "Redis could evict events or grow without bound",
            "Redis memory is running out",
            f"consumer group {STREAM}/uploader is idle and blocks trimming",
            f"consumer group {STREAM}/uploader lags",
        ]
        [group] = first["groups"]
        assert (group["lag"], group["pending"], group["consumers"]) == (290, 10, 1)
        # Held, not sent again, on the next run.
        again = _run(client, warehouse, T0 + dt.timedelta(hours=1), max_idle_h=0.0)
        assert again["sent"] == [] and len(again["held"]) == 4
        # The operator fixes it: noeviction, memory freed, the group caught up and acknowledged.
        client.config_set("maxmemory-policy", "noeviction")
        client.delete(*[f"ballast:{i}" for i in range(400)])
        read = client.xreadgroup("uploader", "worker-1", {STREAM: ">"})
        ids = [entry_id for _, entries in read for entry_id, _ in entries]
        client.xack(STREAM, "uploader", *ids, *[e[0] for e in client.xrange(STREAM, count=10)])
        later = _run(client, warehouse, T0 + dt.timedelta(hours=2), max_idle_h=0.0)
        assert later["sent"] == [] and later["held"] == []
        assert len(later["resolved"]) == 4
        rows = warehouse.query("SELECT kind, times_raised, resolved_at IS NOT NULL AS resolved FROM shadowgate.alerts "
                               "ORDER BY kind").to_pylist()  # fmt: skip
        assert rows == [
            {"kind": kind, "times_raised": 1, "resolved": True}
            for kind in ("redis_group_idle", "redis_group_lag", "redis_memory", "redis_policy")
        ]


def test_a_group_that_reads_is_not_idle_and_an_empty_stream_is_fine(redis_server: RedisServer) -> None:
    client = redis_server.client()
    client.xgroup_create(STREAM, "uploader", id="0", mkstream=True)
    client.xadd(STREAM, {"i": "1"})
    client.xreadgroup("uploader", "worker-1", {STREAM: ">"})
    [group] = redis_figures(client, [STREAM, "absent"]).groups
    assert group.lag == 0 and group.pending == 1 and group.idle_s is not None and group.idle_s < 60
