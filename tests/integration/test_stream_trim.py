"""Trimming a stream respects every consumer group, not only the uploader's (real Redis, real uploader, DuckDB)."""

from __future__ import annotations

from pathlib import Path

import redis

from shadowgate.pipelines.upload import GROUP, upload_streams
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.redis_streams import StreamReader, trim_consumed
from shadowgate.storage.warehouse import default_sql_dir
from tests.integration.crash_uploader import PREDICTIONS
from tests.integration.stream_events import prediction_fields
from tests.redis_server import RedisServer, redis_server_fixture

redis_server = redis_server_fixture()

ANALYTICS = "analytics"


def _upload(client: redis.Redis, path: Path) -> tuple[int, int]:
    """Run the real uploader on the predictions stream; (rows in the warehouse, entries it trimmed)."""
    readers = [(StreamReader(client, stream=PREDICTIONS, group=GROUP, consumer="uploader"), "prediction")]
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        summary = upload_streams(readers=readers, warehouse=warehouse, batch_size=50, read_size=20)
        return warehouse.count("prediction_logs"), summary.streams[0].trimmed


def _ids(client: redis.Redis) -> list[str]:
    return [entry_id for entry_id, _ in client.xrange(PREDICTIONS)]


def test_the_uploader_never_trims_what_another_group_has_not_consumed(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    client = redis_server.client()
    produced = [client.xadd(PREDICTIONS, prediction_fields(i)) for i in range(200)]
    analytics = StreamReader(client, stream=PREDICTIONS, group=ANALYTICS, consumer="a1")
    analytics.ensure_group()
    first_half = analytics.read_new(100)  # read, not acknowledged yet: pending in the analytics group
    assert [e.entry_id for e in first_half] == produced[:100]

    loaded, trimmed = _upload(client, tmp_path / "w.duckdb")
    assert (loaded, trimmed) == (200, 0)  # the uploader acked all 200; analytics still holds the first one pending
    assert _ids(client) == produced

    analytics.ack([e.entry_id for e in first_half])
    assert trim_consumed(client, PREDICTIONS) == 100
    assert _ids(client) == produced[100:]  # exactly what analytics has not read

    rest = analytics.read_new(1000)
    assert [e.entry_id for e in rest] == produced[100:]
    analytics.ack([e.entry_id for e in rest[:30]])  # 70 still pending in analytics
    more = [client.xadd(PREDICTIONS, prediction_fields(i)) for i in range(200, 210)]
    loaded, trimmed = _upload(client, tmp_path / "w.duckdb")
    assert (loaded, trimmed) == (210, 30)
    assert _ids(client) == produced[130:] + more

    analytics.ack([e.entry_id for e in rest[30:]])
    assert trim_consumed(client, PREDICTIONS) == 70  # analytics has not read the 10 new ones
    assert _ids(client) == more
    assert trim_consumed(client, PREDICTIONS) == 0


def test_a_group_that_has_read_nothing_holds_the_whole_stream(redis_server: RedisServer, tmp_path: Path) -> None:
    client = redis_server.client()
    for i in range(20):
        client.xadd(PREDICTIONS, prediction_fields(i))
    client.xgroup_create(PREDICTIONS, ANALYTICS, id="0")
    assert _upload(client, tmp_path / "w.duckdb") == (20, 0)
    assert client.xlen(PREDICTIONS) == 20


def test_a_group_created_at_the_end_does_not_hold_older_entries(redis_server: RedisServer) -> None:
    client = redis_server.client()
    for i in range(5):
        client.xadd(PREDICTIONS, prediction_fields(i))
    client.xgroup_create(PREDICTIONS, ANALYTICS, id="$")  # reads only what comes after its creation
    uploader = StreamReader(client, stream=PREDICTIONS, group=GROUP, consumer="u")
    uploader.ensure_group()
    uploader.ack([e.entry_id for e in uploader.read_new(10)])
    assert uploader.trim_acknowledged() == 5


def test_ids_compare_as_numbers_and_successors_carry(redis_server: RedisServer) -> None:
    client = redis_server.client()
    # Explicit ids where text order is wrong (10-0 sorts before 9-9 as text) and the successor of 9-9 carries.
    for entry_id in ("9-8", "9-9", "10-0", "10-1", "99999999999999-5"):
        client.xadd(PREDICTIONS, {"n": entry_id}, id=entry_id)
    reader = StreamReader(client, stream=PREDICTIONS, group=GROUP, consumer="u")
    reader.ensure_group()
    reader.ack([e.entry_id for e in reader.read_new(2)])  # 9-8, 9-9: done; safe below 9-10
    assert trim_consumed(client, PREDICTIONS) == 2
    assert _ids(client) == ["10-0", "10-1", "99999999999999-5"]
    reader.ack([e.entry_id for e in reader.read_new(2)])
    client.xgroup_create(PREDICTIONS, ANALYTICS, id="10-0")  # has consumed up to 10-0 only
    assert trim_consumed(client, PREDICTIONS) == 1
    assert _ids(client) == ["10-1", "99999999999999-5"]


def test_streams_without_groups_or_keys_are_left_alone(redis_server: RedisServer) -> None:
    client = redis_server.client()
    assert trim_consumed(client, "no-such-stream") == 0
    client.xadd(PREDICTIONS, {"n": "1"})
    assert trim_consumed(client, PREDICTIONS) == 0
    assert client.xlen(PREDICTIONS) == 1
