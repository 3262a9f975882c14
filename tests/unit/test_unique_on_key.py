"""unique_on_key: each merge key once, the earliest stream entry's row kept, the batch's order otherwise kept."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shadowgate.storage.warehouse import check_batch, unique_on_key


def _batch(rows: list[tuple[str, int, int]]) -> pa.Table:
    return pa.table(
        {
            "outcome_id": [k for k, _, _ in rows],
            "stream_entry_id": [f"{ms}-{seq}" for _, ms, seq in rows],
        }
    )


def test_the_earliest_stream_entry_wins_compared_as_numbers() -> None:
    batch = _batch([("a", 10, 0), ("b", 2, 0), ("a", 9, 5), ("c", 1, 0), ("b", 2, 1)])
    out = unique_on_key("outcomes", batch).to_pydict()
    assert out == {"outcome_id": ["b", "a", "c"], "stream_entry_id": ["2-0", "9-5", "1-0"]}


def test_a_batch_without_repeats_is_returned_as_it_is() -> None:
    batch = _batch([("a", 1, 0), ("b", 1, 1)])
    assert unique_on_key("outcomes", batch) is batch


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 10**13), st.integers(0, 50)), max_size=60))
def test_properties(rows: list[tuple[str, int, int]]) -> None:
    batch = _batch(rows)
    out = unique_on_key("outcomes", batch)
    keys = out.column("outcome_id").to_pylist()
    assert sorted(keys) == sorted({k for k, _, _ in rows})  # every key, once
    earliest = {k: min((ms, seq) for kk, ms, seq in rows if kk == k) for k in keys}
    for key, entry in zip(keys, out.column("stream_entry_id").to_pylist(), strict=True):
        assert tuple(map(int, entry.split("-"))) == earliest[key]
    # The kept rows stay in the batch's order.
    positions = [
        next(i for i, (k, ms, seq) in enumerate(rows) if (k, f"{ms}-{seq}") == (key, entry))
        for key, entry in zip(keys, out.column("stream_entry_id").to_pylist(), strict=True)
    ]
    assert positions == sorted(positions)


def test_check_batch_refuses_a_repeated_key() -> None:
    from shadowgate.storage.warehouse import arrow_schema

    empty = arrow_schema("outcomes").empty_table()
    row = {name: None for name in empty.schema.names} | {"outcome_id": "x", "stream_entry_id": "1-0"}
    twice = pa.Table.from_pylist([row, row], schema=empty.schema)
    with pytest.raises(ValueError, match="outcome_id more than once"):
        check_batch("outcomes", twice)
    check_batch("outcomes", unique_on_key("outcomes", twice))
