"""The uploader's read-ahead (order kept, at most one chunk ahead, reader errors surface, an early stop joins) and its
pause of the garbage collector."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from shadowgate.pipelines.upload import _read_ahead


def test_chunks_come_out_in_order_and_the_reader_stays_at_most_one_ahead() -> None:
    produced: list[int] = []

    def chunks() -> Iterator[list[int]]:
        for i in range(6):
            produced.append(i)
            yield [i]

    seen = []
    for chunk in _read_ahead(chunks()):  # type: ignore[arg-type]
        seen.append(chunk[0])
        # The consumer holds chunk i; the reader may have read i+1 (in the box) and be reading i+2 (blocked).
        assert len(produced) <= chunk[0] + 3
    assert seen == list(range(6))


def test_an_error_in_the_reader_is_raised_to_the_consumer_after_the_chunks_before_it() -> None:
    def chunks() -> Iterator[list[int]]:
        yield [1]
        yield [2]
        raise ConnectionError("redis went away")

    seen = []
    with pytest.raises(ConnectionError, match="redis went away"):
        for chunk in _read_ahead(chunks()):  # type: ignore[arg-type]
            seen.append(chunk[0])
    assert seen == [1, 2]


def test_stopping_early_stops_the_reader_thread() -> None:
    def endless() -> Iterator[list[int]]:
        i = 0
        while True:
            i += 1
            yield [i]

    before = threading.active_count()
    gen = _read_ahead(endless())  # type: ignore[arg-type]
    assert next(gen) == [1]
    gen.close()
    assert threading.active_count() == before
    assert not [t for t in threading.enumerate() if t.name == "upload-read"]


def test_the_collector_is_paused_while_draining_and_restored_after_even_on_error() -> None:
    import gc

    from shadowgate.pipelines.upload import _collector_paused

    assert gc.isenabled()
    with pytest.raises(RuntimeError), _collector_paused():
        assert not gc.isenabled() and gc.get_freeze_count() > 0
        raise RuntimeError("upload failed")
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.disable()
    try:
        with _collector_paused():
            pass
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()


@pytest.mark.parametrize(("batch_size", "read_size"), [(0, 10), (10, 0), (-1, 10)])
def test_a_batch_or_read_size_below_one_is_refused_before_anything_is_read(batch_size: int, read_size: int) -> None:
    from shadowgate.pipelines.upload import upload_stream

    class _Untouched:
        stream = "s"

        def __getattr__(self, name: str) -> None:
            raise AssertionError(f"the reader was used ({name})")

    with pytest.raises(ValueError, match="at least 1"):
        upload_stream(
            reader=_Untouched(),  # type: ignore[arg-type]
            warehouse=None,  # type: ignore[arg-type]
            kind="prediction",
            batch_size=batch_size,
            read_size=read_size,
        )
