"""Stream entries → warehouse rows, or quarantine rows with the reason. Two paths, one answer.

* :func:`decode_strict` — the reference: every entry through its pydantic event schema
  (:func:`~shadowgate.events.from_stream_fields`), then the transaction inputs through the contract's pandera
  schema (lazy). ~50 µs an entry.
* :func:`decode` — the same decisions at a few µs an entry: Arrow's JSON reader parses a whole batch of payloads
  against an explicit schema (C++; one schema per payload form: features as an array of a feature set, as the
  service writes them, or as a named object, as version 1 did), vectorised checks mark every row the fast path
  cannot vouch for (a null where a field is required, a version from the future, a naive timestamp, …), and those
  rows — and any payload the reader rejects, isolated by bisection — go through :func:`decode_strict`. A property
  test holds the two paths to the same split and the same rows.

Nothing here knows an event's fields: the parse schemas, the checks (allowed values, bounds, patterns, which nulls
are fine) and the table rows are read from the event models (:mod:`shadowgate.events.schemas`). Fields marked as
contract inputs are checked against the contract with pandera, and features against the known feature sets.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from shadowgate.contract import Kind, pandera_schema
from shadowgate.events import (
    ARRAY_FEATURES_SINCE,
    STREAM_ENCODING_VERSION,
    MalformedEventError,
    from_stream_fields,
)
from shadowgate.events.base import ContractInputs, FeatureVector
from shadowgate.events.schemas import (
    TIMESTAMP,
    EventTable,
    FieldSpec,
    column_name,
    columns,
    contract_inputs,
    fields,
    marked,
    payload_schema,
    table_of_kind,
    table_row,
)
from shadowgate.storage.redis_streams import Entry
from shadowgate.storage.warehouse import arrow_schema


@dataclass
class Decoded:
    """One batch, split: rows for the table (a list from the strict path, Arrow tables from the fast one), the ids of
    the entries they came from, and quarantine rows (with the reason and their entry's id). Every entry lands in
    exactly one place."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    tables: list[pa.Table] = field(default_factory=list)
    entry_ids: list[str] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)

    @property
    def entries(self) -> int:
        """Stream entries decoded (every one is a row or a quarantine row)."""
        return len(self.entry_ids) + len(self.quarantine)

    def extend(self, other: Decoded) -> Decoded:
        """This batch with ``other``'s rows, ids and quarantine rows added (in place)."""
        self.rows.extend(other.rows)
        self.tables.extend(other.tables)
        self.entry_ids.extend(other.entry_ids)
        self.quarantine.extend(other.quarantine)
        return self

    def table(self, name: str) -> pa.Table:
        """Every good row as one Arrow table of :func:`arrow_schema` ``(name)``."""
        schema = arrow_schema(name)
        parts = [*self.tables, pa.Table.from_pylist(self.rows, schema=schema)] if self.rows else self.tables
        return pa.concat_tables(parts) if parts else schema.empty_table()


# ------------------------------------------------------------------------------------------------ decoding


def _quarantine_row(stream: str, entry: Entry, reason: str, now: dt.datetime) -> dict[str, Any]:
    fields = entry.fields
    return {
        "quarantine_id": f"{stream}:{entry.entry_id}",
        "stream": stream,
        "stream_entry_id": entry.entry_id,
        "event_id": fields.get("id"),
        "kind": fields.get("kind"),
        "reason": reason[:2000],
        "raw": orjson.dumps(fields).decode(),
        "quarantined_at": now,
    }


_KIND_CHECK: dict[Kind, Callable[[Any], bool]] = {
    Kind.STRING: lambda v: isinstance(v, str),
    Kind.INTEGER: lambda v: isinstance(v, int) and not isinstance(v, bool),
    Kind.FLOAT: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    Kind.TIMESTAMP: lambda v: isinstance(v, str),
}


def _input_problems(inputs: dict[str, Any], marker: ContractInputs) -> list[str]:
    """Type problems of the logged transaction inputs (values are checked by pandera afterwards)."""
    problems = []
    for f in contract_inputs(marker):
        if f.name not in inputs:
            problems.append(f"inputs.{f.name}: missing")
        elif not _KIND_CHECK[f.kind](inputs[f.name]):
            problems.append(f"inputs.{f.name}: expected {f.kind.value}, got {type(inputs[f.name]).__name__}")
    return problems


def _event_problems(event: Any) -> list[str]:
    """What keeps a valid event out of its table: logged inputs of the wrong type, features that are not exactly
    the names of their (known) feature set."""
    from shadowgate.features import FEATURE_SETS

    model = type(event)
    problems = []
    inputs = marked(model, ContractInputs)
    if inputs is not None and isinstance(inputs.marker, ContractInputs):
        problems.extend(_input_problems(getattr(event, inputs.name), inputs.marker))
    features = marked(model, FeatureVector)
    if features is not None and isinstance(features.marker, FeatureVector):
        set_id = getattr(event, features.marker.set_field)
        names = FEATURE_SETS.get(set_id) if set_id is not None else None
        if names is None or set(getattr(event, features.name)) != set(names):
            problems.append(f"features: not the names of a known feature set (feature_set {set_id!r})")
    return problems


def decode_strict(stream: str, kind: str, entries: Sequence[Entry], now: dt.datetime) -> Decoded:
    """The reference path: each entry through its pydantic event schema, then the contract (pandera, lazy)."""
    table = table_of_kind(kind)
    inputs = _inputs_marker(table)
    out = Decoded()
    candidates: list[tuple[Entry, dict[str, Any], dict[str, Any]]] = []
    for entry in entries:
        try:
            event = from_stream_fields(entry.fields)
        except MalformedEventError as error:
            out.quarantine.append(_quarantine_row(stream, entry, str(error), now))
            continue
        if not isinstance(event, table.model):
            reason = f"wrong_kind: a {type(event).__name__} in the {kind} stream"
            out.quarantine.append(_quarantine_row(stream, entry, reason, now))
            continue
        problems = _event_problems(event)
        if problems:
            out.quarantine.append(_quarantine_row(stream, entry, "invalid_inputs: " + "; ".join(problems), now))
            continue
        row = table_row(table.name, event, {"stream_entry_id": entry.entry_id, "loaded_at": now})
        candidates.append((entry, row, getattr(event, inputs[0]) if inputs else {}))
    failures = _contract_failures([logged for _, _, logged in candidates], inputs[1]) if inputs and candidates else {}
    for i, (entry, row, _) in enumerate(candidates):
        if i in failures:
            out.quarantine.append(_quarantine_row(stream, entry, "contract: " + "; ".join(failures[i]), now))
        else:
            out.rows.append(row)
            out.entry_ids.append(entry.entry_id)
    return out


def _inputs_marker(table: EventTable) -> tuple[str, ContractInputs] | None:
    """The field of the table's event holding contract inputs (checked against the contract), and its marker."""
    spec = marked(table.model, ContractInputs)
    if spec is None or not isinstance(spec.marker, ContractInputs):
        return None
    return spec.name, spec.marker


def _contract_failures(inputs: Sequence[dict[str, Any]], marker: ContractInputs) -> dict[int, list[str]]:
    """Row position → every contract check it fails (pandera, lazy), for the logged inputs of a batch."""
    import pandas as pd

    frame = pd.DataFrame.from_records(inputs, columns=[f.name for f in contract_inputs(marker)])
    return _contract_check(frame, marker)


@functools.cache
def _logged_inputs_schema(marker: ContractInputs) -> Any:
    """The contract's pandera schema without the fields the event does not log; built once (it deep-copies)."""
    return pandera_schema(arrow_strings=True).remove_columns(list(marker.excluded))


def _contract_check(frame: Any, marker: ContractInputs) -> dict[int, list[str]]:
    import pandas as pd
    import pandera.errors

    schema = _logged_inputs_schema(marker)
    for f in contract_inputs(marker):
        # The strict path's frames hold Python strings (their types were checked row by row before): same dtype.
        is_text = f.kind is Kind.STRING and frame[f.name].dtype == object
        if is_text and all(isinstance(v, str) for v in frame[f.name]):
            frame[f.name] = frame[f.name].astype(pd.StringDtype("pyarrow"))
        elif f.kind is Kind.FLOAT and frame[f.name].dtype.kind in "iu":
            # JSON 100 is a valid amount: a column of whole numbers is still a float column (as Arrow reads it).
            frame[f.name] = frame[f.name].astype("float64")
        elif f.kind is Kind.TIMESTAMP and not isinstance(frame[f.name].dtype, pd.DatetimeTZDtype):
            # The fast path hands over UTC timestamps already; parsing them again walked every value in Python.
            frame[f.name] = pd.to_datetime(frame[f.name], utc=True, format="ISO8601", errors="coerce")
    try:
        schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as errors:
        out: dict[int, list[str]] = defaultdict(list)
        cases = errors.failure_cases
        for case in cases.itertuples(index=False):
            where = case.index
            what = f"{case.column or 'row'}: {case.check} (got {case.failure_case!r})"
            if where is None or (isinstance(where, float) and where != where):
                for i in range(len(frame)):  # a column-level failure (e.g. its type) concerns every row
                    out[i].append(what)
            else:
                out[int(where)].append(what)
        return dict(out)
    return {}


# ------------------------------------------------------------------------------------------------ the fast path

_TS_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"
"""Timestamps the fast path takes: ISO 8601 with an explicit offset (pydantic's AwareDatetime takes more forms; those
rows go the strict way)."""

ARRAY_FORM = "/array"
"""Suffix of the payload form whose features are an array of a feature set (what the service writes); without it,
a kind's payload form has them as a named object (as version 1 wrote them)."""


def _parse(payloads: list[bytes], form: str) -> pa.Table:
    kind, array = form.removesuffix(ARRAY_FORM), form.endswith(ARRAY_FORM)
    schema = payload_schema(table_of_kind(kind).model, features_as_array=array)
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    return pj.read_json(io.BytesIO(b"\n".join(payloads)), parse_options=options)


def _parse_bisect(
    payloads: list[bytes], start: int, stop: int, form: str
) -> tuple[list[tuple[int, pa.Table]], list[int]]:
    """Parsed blocks (first position, table) of ``payloads[start:stop]``, and the positions whose payload the reader
    rejects (found by halving the failing block)."""
    try:
        return [(start, _parse(payloads[start:stop], form))], []
    except pa.ArrowInvalid:
        if stop - start == 1:
            return [], [start]
    mid = (start + stop) // 2
    left, bad_left = _parse_bisect(payloads, start, mid, form)
    right, bad_right = _parse_bisect(payloads, mid, stop, form)
    return left + right, bad_left + bad_right


def _combined(column: Any) -> Any:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _struct_children_valid(column: Any) -> Any:
    column = _combined(column)
    mask = pc.is_valid(column)
    for i in range(column.type.num_fields):
        mask = pc.and_(mask, pc.is_valid(pc.struct_field(column, [i])))
    return mask


def _list_all(column: Any, check: Callable[[Any], Any]) -> Any:
    """Per row: ``check`` holds for every element of the list (True for an empty list; null lists stay null)."""
    column = _combined(column)
    flat = pc.list_flatten(column)
    if len(flat) == 0:
        return pc.is_valid(column)
    bad = pc.invert(pc.fill_null(check(flat), False))
    parents = pc.list_parent_indices(column)
    bad_rows = pc.unique(pc.filter(parents, bad))
    is_bad = pc.is_in(pa.array(range(len(column)), pa.int64()), value_set=bad_rows.cast(pa.int64()))
    return pc.and_(pc.is_valid(column), pc.invert(is_bad))


def _ts_ok(column: Any) -> Any:
    return pc.fill_null(pc.match_substring_regex(column, _TS_PATTERN), False)


_BOUND_CHECKS = (("ge", pc.greater_equal), ("gt", pc.greater), ("le", pc.less_equal), ("lt", pc.less))


def _field_ok(column: Any, spec: FieldSpec) -> Any:
    """Per row: the field passes what its model checks — a null only where the model takes one alike whether the
    key is missing or null, a value of the allowed values and in the bounds, nested fields alike."""
    column = _combined(column)
    good = _list_all(column, lambda items: _value_ok(items, spec)) if spec.repeated else _value_ok(column, spec)
    return pc.if_else(pc.is_valid(column), pc.fill_null(good, False), spec.null_ok)


def _value_ok(values: Any, spec: FieldSpec) -> Any:
    ok = pc.is_valid(values)
    for child in spec.children:
        ok = pc.and_(ok, _field_ok(pc.struct_field(values, child.name), child))
    if spec.choices is not None:
        ok = pc.and_(ok, pc.is_in(values, value_set=pa.array(spec.choices)))
    for bound, compare in _BOUND_CHECKS:
        limit = getattr(spec, bound)
        if limit is not None:
            ok = pc.and_(ok, compare(values, limit))
    if spec.pattern is not None:
        ok = pc.and_(ok, pc.match_substring_regex(values, spec.pattern))
    if spec.timestamp:
        ok = pc.and_(ok, _ts_ok(values))
    return ok


def _inputs_ok(inputs: Any, marker: ContractInputs) -> Any:
    # Values are the contract's to check (pandera, next); here only that every one is there and timestamps have an
    # offset.
    inputs = _combined(inputs)
    ok = _struct_children_valid(inputs)
    for f in contract_inputs(marker):
        if f.kind is Kind.TIMESTAMP:
            ok = pc.and_(ok, _ts_ok(pc.struct_field(inputs, f.name)))
    return ok


def _features_ok(features: Any, set_ids: Any, *, array: bool) -> Any:
    from shadowgate.features import FEATURE_SET, FEATURE_SETS

    if array:
        # Every known set maps onto the table's struct; an unknown one goes the strict way (which refuses it).
        widths = pa.array([len(names) for names in FEATURE_SETS.values()], pa.int32())
        expected = pc.take(widths, pc.index_in(set_ids, value_set=pa.array(list(FEATURE_SETS), pa.string())))
        ok = pc.fill_null(pc.equal(pc.list_value_length(_combined(features)), expected), False)
        return pc.and_(ok, _list_all(features, pc.is_valid))
    # The named form is parsed against the current set's names: its set must be unnamed (the model names it) or that.
    ok = pc.fill_null(pc.equal(set_ids, FEATURE_SET), True)
    return pc.and_(ok, _struct_children_valid(features))


def _vouched(t: pa.Table, table: EventTable, ids: pa.Array, *, array: bool) -> Any:
    """Rows whose every field the fast path can vouch for (the others take the strict path)."""
    ok = pc.equal(t.column(table.key_field), ids)
    for spec in fields(table.model):
        column = _combined(t.column(spec.name))  # once: every check below reads whole arrays
        if isinstance(spec.marker, ContractInputs):
            ok = pc.and_(ok, _inputs_ok(column, spec.marker))
        elif isinstance(spec.marker, FeatureVector):
            ok = pc.and_(ok, _features_ok(column, t.column(spec.marker.set_field), array=array))
        else:
            ok = pc.and_(ok, _field_ok(column, spec))
    if array:
        ok = pc.and_(ok, pc.greater_equal(t.column("schema_version"), ARRAY_FEATURES_SINCE))
    return pc.fill_null(ok, False)


def _ts(column: Any) -> Any:
    return pc.cast(column, TIMESTAMP)


def _feature_struct(features: Any, set_ids: Any, names: tuple[str, ...]) -> pa.StructArray:
    """A vouched features column (named structs of the current set, or full arrays of known sets) as the table's
    struct: a field per name of every known set, the names of another set than a row's null."""
    from shadowgate.features import FEATURE_SETS

    features = _combined(features)
    n = len(features)
    if isinstance(features, pa.StructArray):
        given = {features.type.field(i).name: features.field(i) for i in range(features.type.num_fields)}
        children = [given[name] if name in given else pa.nulls(n, pa.float64()) for name in names]
    else:
        flat = pc.list_flatten(features).to_numpy(zero_copy_only=False)
        sets = pc.unique(_combined(set_ids)).to_pylist()
        if len(sets) == 1:  # the usual batch: one set, a matrix
            order = {name: i for i, name in enumerate(FEATURE_SETS[sets[0]])}
            matrix = flat.reshape(n, len(order))
            children = [
                pa.array(matrix[:, order[name]]) if name in order else pa.nulls(n, pa.float64()) for name in names
            ]
        else:
            children = _mixed_feature_sets(features, set_ids, flat, names)
    return pa.StructArray.from_arrays(children, names=[column_name(name) for name in names])


def _mixed_feature_sets(features: Any, set_ids: Any, flat: Any, names: tuple[str, ...]) -> list[pa.Array]:
    from shadowgate.features import FEATURE_SETS

    n = len(features)
    starts = np.concatenate(([0], np.cumsum(pc.list_value_length(features).to_numpy())[:-1]))
    row_sets = _combined(set_ids).to_numpy(zero_copy_only=False)
    position = {name: j for j, name in enumerate(names)}
    values = np.zeros((len(names), n))
    given = np.zeros((len(names), n), dtype=bool)
    for set_id in set(row_sets):
        rows = np.flatnonzero(row_sets == set_id)
        for i, name in enumerate(FEATURE_SETS[set_id]):
            values[position[name], rows] = flat[starts[rows] + i]
            given[position[name], rows] = True
    return [pa.array(values[j], mask=~given[j]) for j in range(len(names))]


def _as(column: Any, arrow_type: pa.DataType) -> Any:
    return column if column.type.equals(arrow_type) else pc.cast(column, arrow_type)


def _build(t: pa.Table, table: EventTable, entry_ids: pa.Array, now: dt.datetime, *, array: bool) -> pa.Table:
    """Vouched payload rows → rows of the target table, column by column as :func:`columns` lays them out."""
    from shadowgate.features import FEATURE_SET

    load = {"stream_entry_id": entry_ids, "loaded_at": pa.array([now] * len(t), TIMESTAMP)}
    features = marked(table.model, FeatureVector)
    set_field = features.marker.set_field if features and isinstance(features.marker, FeatureVector) else None
    out = []
    structs: dict[str, pa.StructArray] = {}
    for c in columns(table.name):
        if c.field is None:
            out.append(load[c.name])
        elif c.item is not None:
            struct = structs.setdefault(c.field, _combined(t.column(c.field)))
            out.append(_as(struct.field(c.item), c.type))
        elif c.features is not None and set_field is not None:
            out.append(_feature_struct(t.column(c.field), t.column(set_field), c.features))
        elif c.field == set_field and not array:
            out.append(pc.fill_null(t.column(c.field), FEATURE_SET))  # as the model names a named current set
        else:
            out.append(_as(t.column(c.field), c.type))
    return pa.Table.from_arrays(out, schema=arrow_schema(table.name))


_LAYOUT = (b"v", b"id", b"kind", b"payload")


def _envelope(entry: Entry) -> tuple[bytes | None, bytes | None, bytes | None, bytes | None]:
    """``(v, id, kind, payload)`` of an entry; quick for the layout the producers write."""
    raw = entry.raw
    if type(raw) is list and len(raw) == 8 and (raw[0], raw[2], raw[4], raw[6]) == _LAYOUT:
        return raw[1], raw[3], raw[5], raw[7]
    return entry.get("v"), entry.get("id"), entry.get("kind"), entry.get("payload")


_ARRAY_FEATURES = b'"features":['
"""How an array of features starts (a hint for the parse schema: a wrong guess fails the parse or the checks, and the
entry goes the strict way)."""


@dataclass
class _Group:
    """The entries of one payload form, for one parse."""

    entries: list[Entry] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    envelope_ids: list[str] = field(default_factory=list)


def decode(stream: str, kind: str, entries: Sequence[Entry], now: dt.datetime) -> Decoded:
    """Split ``entries`` into table rows and quarantine rows — the same split as :func:`decode_strict`, faster."""
    out = Decoded()
    groups: dict[str, _Group] = defaultdict(_Group)
    slow: list[Entry] = []
    version, wanted = STREAM_ENCODING_VERSION.encode(), kind.encode()
    has_features = marked(table_of_kind(kind).model, FeatureVector) is not None
    for entry in entries:
        v, event_id, entry_kind, payload = _envelope(entry)
        if (
            payload is not None
            and event_id is not None
            and v == version
            and entry_kind == wanted
            and b"\n" not in payload
        ):
            form = kind + ARRAY_FORM if has_features and _ARRAY_FEATURES in payload else kind
            group = groups[form]
            group.entries.append(entry)
            group.payloads.append(payload)
            group.envelope_ids.append(event_id.decode("utf-8", "replace"))
        else:
            slow.append(entry)
    for form, group in groups.items():
        slow.extend(_decode_group(stream, form, group, now, out))
    if slow:
        strict = decode_strict(stream, kind, slow, now)
        out.rows.extend(strict.rows)
        out.entry_ids.extend(strict.entry_ids)
        out.quarantine.extend(strict.quarantine)
    return out


def _decode_group(stream: str, form: str, group: _Group, now: dt.datetime, out: Decoded) -> list[Entry]:
    """Parse, check and build one form's entries into ``out``; returns the entries left for the strict path."""
    table, array = table_of_kind(form.removesuffix(ARRAY_FORM)), form.endswith(ARRAY_FORM)
    inputs = _inputs_marker(table)
    slow: list[Entry] = []
    blocks, rejected = _parse_bisect(group.payloads, 0, len(group.payloads), form)
    slow.extend(group.entries[i] for i in rejected)
    for start, parsed in blocks:
        block_entries = group.entries[start : start + len(parsed)]
        ids = pa.array([e.entry_id for e in block_entries], pa.string())
        envelope_ids = pa.array(group.envelope_ids[start : start + len(parsed)], pa.string())
        vouched = _vouched(parsed, table, envelope_ids, array=array)
        if not pc.all(vouched).as_py():
            flags = vouched.to_pylist()
            slow.extend(e for e, v in zip(block_entries, flags, strict=True) if not v)
            parsed, ids = parsed.filter(vouched), ids.filter(vouched)
            block_entries = [e for e, v in zip(block_entries, flags, strict=True) if v]
        if len(parsed) == 0:
            continue
        if inputs is not None:
            failures = _contract_failures_table(parsed.column(inputs[0]).combine_chunks(), inputs[1])
            if failures:
                keep = pa.array([i not in failures for i in range(len(parsed))])
                for i, reasons in sorted(failures.items()):
                    reason = "contract: " + "; ".join(reasons)
                    out.quarantine.append(_quarantine_row(stream, block_entries[i], reason, now))
                parsed, ids = parsed.filter(keep), ids.filter(keep)
                block_entries = [e for i, e in enumerate(block_entries) if i not in failures]
        out.tables.append(_build(parsed, table, ids, now, array=array))
        out.entry_ids.extend(e.entry_id for e in block_entries)
    return slow


def _contract_failures_table(inputs: pa.StructArray, marker: ContractInputs) -> dict[int, list[str]]:
    import pandas as pd

    frame = {}
    for f in contract_inputs(marker):
        values = inputs.field(f.name)
        if f.kind is Kind.STRING:
            frame[f.name] = pd.Series(pd.arrays.ArrowStringArray(values))
        elif f.kind is Kind.TIMESTAMP:
            frame[f.name] = pd.Series(_ts(values).to_pandas()).astype("datetime64[ns, UTC]")
        else:
            frame[f.name] = pd.Series(values.to_numpy(zero_copy_only=False))
    return _contract_check(pd.DataFrame(frame), marker)
