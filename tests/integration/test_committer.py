"""The commit script on a real Redis: entries and position together, compare-and-set, outcome de-duplication."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowgate.serving.committer import CommitOutcome, Committer, StreamRecord
from shadowgate.serving.journal import Position
from tests.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


def _record(i: int, stream: str = "t:predictions", dedup: str | None = None) -> StreamRecord:
    return StreamRecord(stream, {"v": "1", "id": f"e{i}", "kind": "prediction", "payload": "{}"}, dedup)


def test_entries_and_position_move_together_and_a_stale_commit_writes_nothing(redis_server: RedisServer) -> None:
    committer = Committer(redis_url=redis_server.url, journal_id="jnl-test")
    client = redis_server.client()
    assert committer.position() is None
    first = committer.commit([_record(i) for i in range(3)], expected=None, new=Position(1, 300))
    assert first.outcome is CommitOutcome.COMMITTED and first.written == 3
    assert committer.position() == Position(1, 300)
    # A second process that read the same records from the same start loses the race and writes nothing.
    stale = committer.commit([_record(i) for i in range(3)], expected=None, new=Position(1, 300))
    assert stale.outcome is CommitOutcome.CONFLICT and stale.current == Position(1, 300)
    assert client.xlen("t:predictions") == 3
    nxt = committer.commit([_record(3)], expected=Position(1, 300), new=Position(1, 400))
    assert nxt.written == 1 and client.xlen("t:predictions") == 4
    assert [f["id"] for _, f in client.xrange("t:predictions")] == ["e0", "e1", "e2", "e3"]
    # The de-duplication state is one key per journal, not one per event.
    assert client.keys("shadowgate:dedup:*") == []
    assert client.keys("shadowgate:journal:*") == ["shadowgate:journal:jnl-test:position"]


def test_an_outcome_sent_again_within_the_window_is_not_added_twice(redis_server: RedisServer) -> None:
    committer = Committer(redis_url=redis_server.url, journal_id="jnl-o", outcome_dedup_ttl_s=1)
    client = redis_server.client()
    result = committer.commit(
        [_record(1, "t:outcomes", "o-1"), _record(1, "t:outcomes", "o-1"), _record(2, "t:outcomes", "o-2")],
        expected=None,
        new=Position(1, 10),
    )
    assert (result.written, result.duplicates) == (2, 1)
    assert 0 < client.ttl("shadowgate:dedup:o-1") <= 1
    time.sleep(1.2)  # past the window a re-send is added (the warehouse MERGE on outcome_id keeps one row)
    again = committer.commit([_record(1, "t:outcomes", "o-1")], expected=Position(1, 10), new=Position(1, 20))
    assert again.written == 1 and client.xlen("t:outcomes") == 3


def test_a_key_of_another_type_is_refused_and_the_rest_of_the_batch_lands(redis_server: RedisServer) -> None:
    committer = Committer(redis_url=redis_server.url, journal_id="jnl-w")
    client = redis_server.client()
    client.set("t:broken", "a string, not a stream")
    result = committer.commit([_record(1), _record(2, "t:broken"), _record(3)], expected=None, new=Position(1, 5))
    assert result.outcome is CommitOutcome.COMMITTED
    assert result.written == 2 and result.refused == (1,)
    assert client.xlen("t:predictions") == 2 and committer.position() == Position(1, 5)


def test_redis_down_raises_and_nothing_moves(redis_server: RedisServer) -> None:
    committer = Committer(redis_url=redis_server.url, journal_id="jnl-d", socket_timeout_s=0.5)
    redis_server.stop()
    with pytest.raises(Exception) as caught:
        committer.commit([_record(1)], expected=None, new=Position(1, 5))
    from shadowgate.serving.committer import is_transient

    assert is_transient(caught.value)
    redis_server.start()
    assert committer.position() is None


def test_a_retry_whose_first_try_ran_is_recognised_and_another_writers_race_is_a_conflict(
    redis_server: RedisServer,
) -> None:
    """Redis killed right after running a commit: the reply is lost and the shadow process retries the same batch.
    Redis holds exactly that batch's end from this writer: ALREADY, nothing written twice. The same end reached by
    another writer's process stays a conflict."""
    mine = Committer(redis_url=redis_server.url, journal_id="jnl-test", writer_epoch="aaa")
    other = Committer(redis_url=redis_server.url, journal_id="jnl-test", writer_epoch="bbb")
    client = redis_server.client()
    batch = [_record(i) for i in range(3)]
    assert mine.commit(batch, expected=None, new=Position(1, 300)).outcome is CommitOutcome.COMMITTED
    again = mine.commit(batch, expected=None, new=Position(1, 300))
    assert again.outcome is CommitOutcome.ALREADY and again.written == 0
    assert other.commit(batch, expected=None, new=Position(1, 300)).outcome is CommitOutcome.CONFLICT
    assert client.xlen("t:predictions") == 3
    assert mine.holder() == (Position(1, 300), "aaa")
