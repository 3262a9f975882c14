"""Every other form of an event, derived from its pydantic model: nothing here is typed twice.

* :func:`fields` — a model's fields as the derivations see them: Arrow type in the warehouse and on the wire,
  nullability, and the constraints pydantic enforces (allowed values of a ``Literal``, ranges, patterns), which the
  fast decoder checks vectorised.
* :func:`payload_schema` — the JSON payload as Arrow's JSON reader parses it (timestamps as strings).
* :data:`EVENT_TABLES` / :func:`columns` — the warehouse row of each event table: the key column the event id
  becomes (first), one column per other field in the model's order (the contract inputs flattened, the features
  one struct with a field per name of every known feature set), then the load metadata. :func:`table_schema`,
  :func:`ddl_columns` (the BigQuery column list the DDL files take through a placeholder) and :func:`table_row`
  follow from it.

Types map one way: ``str`` → string / ``STRING``, ``int`` → int64 / ``INT64``, ``float`` → float64 / ``FLOAT64``,
``bool`` → bool / ``BOOL``, an aware datetime → timestamp (µs, UTC) / ``TIMESTAMP``, ``Literal`` → its values' type,
a nested model → struct / ``STRUCT<…>``, ``list[X]`` → list / ``ARRAY<X>``, ``X | None`` → nullable. Lists are
nullable columns (BigQuery has no required ARRAY; the decoders write an empty list, never null) and struct fields are
nullable (DuckDB has no NOT NULL inside a STRUCT).
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import functools
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pyarrow as pa
import pydantic
from pydantic.fields import FieldInfo

from shadowgate.events.base import ContractInputs, FeatureVector
from shadowgate.events.envelope import OUTCOME, PREDICTION
from shadowgate.events.outcome import OutcomeEvent
from shadowgate.events.prediction import PredictionEvent

if typing.TYPE_CHECKING:
    from shadowgate.contract import ContractField

TIMESTAMP = pa.timestamp("us", tz="UTC")

_SCALARS: dict[Any, pa.DataType] = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
_DATETIMES = (dt.datetime, pydantic.AwareDatetime)
_BIGQUERY: dict[pa.DataType, str] = {
    pa.string(): "STRING",
    pa.int64(): "INT64",
    pa.float64(): "FLOAT64",
    pa.bool_(): "BOOL",
    TIMESTAMP: "TIMESTAMP",
    pa.date32(): "DATE",
}
_BOUNDS = ("ge", "gt", "le", "lt")


# ------------------------------------------------------------------------------------------------ fields


@dataclass(frozen=True)
class FieldSpec:
    """One field of an event model, or of a model nested in one."""

    name: str
    type: pa.DataType | None
    """Its Arrow type in the warehouse (None for a marked field: see :func:`columns`). For a list, the list type."""
    wire: pa.DataType | None
    """Its Arrow type in the JSON payload: timestamps are strings there (checked for an offset, then cast)."""
    nullable: bool
    """``X | None``."""
    null_ok: bool
    """A null may be vouched for without pydantic: the field is ``X | None`` with a default of None (so a missing key
    and a null mean the same, as they do to Arrow's JSON reader) and no model validator looks at it."""
    repeated: bool = False
    """A list; the constraints and children below are its elements'."""
    timestamp: bool = False
    choices: tuple[Any, ...] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    pattern: str | None = None
    children: tuple[FieldSpec, ...] = ()
    """Fields of a nested model."""
    nested: builtins.type[pydantic.BaseModel] | None = None
    """The nested model whose fields ``children`` are."""
    marker: ContractInputs | FeatureVector | None = None
    json: bool = False
    """A free-form object, stored as JSON."""


def _unwrap(annotation: Any) -> tuple[Any, bool, list[Any]]:
    """``(type, nullable, metadata)`` of an annotation, its ``Annotated`` and ``| None`` layers peeled."""
    nullable, metadata = False, []
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation, *extra = typing.get_args(annotation)
            for item in extra:
                metadata.extend(item.metadata if isinstance(item, FieldInfo) else [item])
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                raise TypeError(f"no warehouse type for the union {annotation!r}")
            nullable, annotation = True, args[0]
        else:
            return annotation, nullable, metadata


def _checked(item: Any, where: str) -> dict[str, Any]:
    """The constraint ``item`` puts on a field, as :class:`FieldSpec` holds it. One the fast decoder cannot check
    vectorised is refused here, so that it cannot load what pydantic would quarantine."""
    if isinstance(item, ContractInputs | FeatureVector):
        return {}
    values = {k: getattr(item, k) for k in (*_BOUNDS, "pattern") if getattr(item, k, None) is not None}
    others = {k: v for k, v in getattr(item, "__dict__", {}).items() if v is not None and k not in values}
    if not values or others:
        raise TypeError(f"{where}: {item!r} has no check in the fast decoder (stream_decode._value_ok): add one")
    return values


def _spec(name: str, annotation: Any, info: FieldInfo | None, owner: type[pydantic.BaseModel]) -> FieldSpec:
    base, nullable, metadata = _unwrap(annotation)
    if info is not None:
        metadata = [*info.metadata, *metadata]
    constraints: dict[str, Any] = {}
    for item in metadata:
        constraints.update(_checked(item, f"{owner.__name__}.{name}"))
    marker = next((m for m in metadata if isinstance(m, ContractInputs | FeatureVector)), None)
    null_ok = (
        nullable
        and info is not None
        and not info.is_required()
        and info.default is None
        and name not in getattr(owner, "NULL_NEEDS_VALIDATOR", ())
    )
    common = {"name": name, "nullable": nullable, "null_ok": null_ok, "marker": marker, **constraints}
    origin = typing.get_origin(base)
    if origin is list:
        (item_type,) = typing.get_args(base)
        element = _spec(name, item_type, None, owner)
        if element.type is None or element.wire is None or element.repeated:
            raise TypeError(f"{owner.__name__}.{name}: no warehouse type for a list of {item_type!r}")
        return dataclasses.replace(
            element, **common, type=pa.list_(element.type), wire=pa.list_(element.wire), repeated=True
        )
    if origin is Literal:
        choices = typing.get_args(base)
        (kind,) = {_SCALARS[type(c)] for c in choices}
        return FieldSpec(**common, type=kind, wire=kind, choices=choices)
    if origin is dict:
        # A marked dict (contract inputs, features) is laid out by whoever reads the marker; any other is JSON.
        json_type = None if marker is not None else pa.string()
        return FieldSpec(**common, type=json_type, wire=None, json=marker is None)
    if base in _SCALARS:
        return FieldSpec(**common, type=_SCALARS[base], wire=_SCALARS[base])
    if isinstance(base, type) and issubclass(base, _DATETIMES):
        return FieldSpec(**common, type=TIMESTAMP, wire=pa.string(), timestamp=True)
    if isinstance(base, type) and issubclass(base, pydantic.BaseModel):
        children = fields(base)
        if any(c.type is None or c.wire is None for c in children):
            raise TypeError(f"{owner.__name__}.{name}: a nested {base.__name__} needs every field typed")
        return FieldSpec(
            **common,
            type=pa.struct([(c.name, c.type) for c in children]),
            wire=pa.struct([(c.name, c.wire) for c in children]),
            children=children,
            nested=base,
        )
    raise TypeError(f"{owner.__name__}.{name}: no warehouse type for {annotation!r}")


@functools.cache
def fields(model: type[pydantic.BaseModel]) -> tuple[FieldSpec, ...]:
    """The fields of ``model`` in declaration order (the order of its JSON and of its table's columns)."""
    return tuple(_spec(name, info.annotation, info, model) for name, info in model.model_fields.items())


def marked(model: type[pydantic.BaseModel], marker: type[Any]) -> FieldSpec | None:
    """The field of ``model`` carrying a marker of type ``marker`` (:class:`ContractInputs`, :class:`FeatureVector`)."""
    return next((f for f in fields(model) if isinstance(f.marker, marker)), None)


def contract_inputs(marker: ContractInputs) -> tuple[ContractField, ...]:
    """The contract fields a :class:`ContractInputs` field holds, in contract order."""
    from shadowgate.contract import TRANSACTION_FIELDS

    return tuple(f for f in TRANSACTION_FIELDS if f.name not in marker.excluded)


def _contract_type(field: ContractField, *, wire: bool) -> pa.DataType:
    from shadowgate.contract import Kind

    if field.kind is Kind.TIMESTAMP:
        return pa.string() if wire else TIMESTAMP
    return {Kind.STRING: pa.string(), Kind.INTEGER: pa.int64(), Kind.FLOAT: pa.float64()}[field.kind]


@functools.cache
def payload_schema(model: type[pydantic.BaseModel], *, features_as_array: bool = False) -> pa.Schema:
    """The payload of a ``model`` event as Arrow's JSON reader should parse it: every field, in order, with its wire
    type. Features are parsed as an array (``features_as_array``: what the service writes, in the order of the set
    named by the event) or as an object of the current feature set's names (what version 1 wrote)."""
    from shadowgate.features import FEATURE_NAMES

    out = []
    for f in fields(model):
        if isinstance(f.marker, ContractInputs):
            wire = pa.struct([(c.name, _contract_type(c, wire=True)) for c in contract_inputs(f.marker)])
        elif isinstance(f.marker, FeatureVector):
            named = pa.struct([(n, pa.float64()) for n in FEATURE_NAMES])
            wire = pa.list_(pa.float64()) if features_as_array else named
        elif f.wire is None:
            raise TypeError(f"{model.__name__}.{f.name} has no form Arrow's JSON reader can parse")
        else:
            wire = f.wire
        out.append((f.name, wire))
    return pa.schema(out)


# ------------------------------------------------------------------------------------------------ tables


def column_name(feature: str) -> str:
    """The warehouse name of a feature: one-hot names (``channel=web``) become ``channel__web``."""
    name = feature.replace("=", "__")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"feature {feature!r} has no valid column name")
    return name


@dataclass(frozen=True)
class Column:
    """One column of an event table."""

    name: str
    type: pa.DataType
    nullable: bool
    field: str | None = None
    """The event field it comes from (None: load metadata)."""
    item: str | None = None
    """For a contract input: its name in the field (the value is ``event.<field>[<item>]``)."""
    features: tuple[str, ...] | None = None
    """For the features struct: the feature names of its fields, in order (field ``i`` is ``column_name`` of name
    ``i``; an event fills the names of its set, the others stay null)."""
    json: bool = False

    @property
    def arrow(self) -> pa.Field:
        return pa.field(self.name, self.type, nullable=self.nullable)

    @property
    def ddl(self) -> str:
        """Its BigQuery column definition."""
        kind = "JSON" if self.json else bigquery_type(self.type)
        return f"{self.name} {kind}" + ("" if self.nullable else " NOT NULL")


STREAM_LOAD_COLUMNS = (
    Column("stream_entry_id", pa.string(), nullable=False),
    Column("loaded_at", TIMESTAMP, nullable=False),
)
"""What the uploader adds to every row it loads from a stream: the entry it came from and when."""


@dataclass(frozen=True)
class EventTable:
    """An event model and the warehouse table its events are loaded into (one row per event, merged on ``key``).

    Adding an event table is one of these in :data:`EVENT_TABLES`, a ``ddl/<name>.sql`` whose column list is
    ``${<name>_columns}``, and a ``merge/<name>.sql``.
    """

    name: str
    model: type[pydantic.BaseModel]
    key: str
    """The column the event id becomes (the MERGE key)."""
    time_column: str
    """The partition column: each MERGE is bounded to the batch's range of it."""
    kind: str | None = None
    """The stream ``kind`` loaded into it (None: not loaded from a stream)."""
    key_field: str = "event_id"
    load_columns: tuple[Column, ...] = STREAM_LOAD_COLUMNS


PREDICTION_LOGS = "prediction_logs"
OUTCOMES = "outcomes"

EVENT_TABLES: dict[str, EventTable] = {
    t.name: t
    for t in (
        EventTable(
            PREDICTION_LOGS, PredictionEvent, key="prediction_id", time_column="event_timestamp", kind=PREDICTION
        ),
        EventTable(OUTCOMES, OutcomeEvent, key="outcome_id", time_column="event_timestamp", kind=OUTCOME),
    )
}
"""Every event table, by name."""


def table_of_kind(kind: str) -> EventTable:
    """The table events of stream ``kind`` are loaded into."""
    return next(t for t in EVENT_TABLES.values() if t.kind == kind)


def feature_union(feature_sets: Mapping[str, tuple[str, ...]] | None = None) -> tuple[str, ...]:
    """Every known feature name: the current set's in its order, then names only older sets have (in the order of
    :data:`~shadowgate.features.FEATURE_SETS`)."""
    from shadowgate.features import FEATURE_SET, FEATURE_SETS

    sets = FEATURE_SETS if feature_sets is None else feature_sets
    names = dict.fromkeys(sets.get(FEATURE_SET, ()))
    for set_names in sets.values():
        names.update(dict.fromkeys(set_names))
    return tuple(names)


def columns(table: str) -> tuple[Column, ...]:
    """The columns of event table ``table``, in order (as its DDL creates them and its batches carry them)."""
    from shadowgate.features import FEATURE_SETS

    # Keyed by the known feature sets, not cached blindly: registering a set changes the features struct.
    return _columns(table, tuple(FEATURE_SETS.items()))


@functools.cache
def _columns(table: str, feature_sets: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[Column, ...]:
    spec = EVENT_TABLES[table]
    own = {f.name for f in fields(spec.model)}
    out = [Column(spec.key, pa.string(), nullable=False, field=spec.key_field)]
    for f in fields(spec.model):
        if f.name == spec.key_field:
            continue
        if isinstance(f.marker, ContractInputs):
            # Inputs the event also carries as fields of its own (transaction_id, …) are stored once, from there.
            out.extend(
                Column(c.name, _contract_type(c, wire=False), nullable=False, field=f.name, item=c.name)
                for c in contract_inputs(f.marker)
                if c.name not in own
            )
        elif isinstance(f.marker, FeatureVector):
            names = feature_union(dict(feature_sets))
            struct = pa.struct([(column_name(n), pa.float64()) for n in names])
            out.append(Column(f.name, struct, nullable=f.nullable, field=f.name, features=names))
        elif f.type is not None:
            out.append(Column(f.name, f.type, nullable=f.nullable or f.repeated, field=f.name, json=f.json))
    out.extend(spec.load_columns)
    taken = [c.name for c in out] + [f"{c.name}.{n}" for c in out if c.features is not None for n in c.type.names]
    if len(set(taken)) != len(taken):
        raise ValueError(f"{table}: two columns or two features have one name: {sorted(taken)}")
    return tuple(out)


def table_schema(table: str) -> pa.Schema:
    """The Arrow schema of a batch for event table ``table``."""
    return pa.schema([c.arrow for c in columns(table)])


def bigquery_type(arrow: pa.DataType) -> str:
    """The BigQuery type of an Arrow type (of :func:`fields`' vocabulary)."""
    if pa.types.is_struct(arrow):
        return "STRUCT<" + ", ".join(f"{f.name} {bigquery_type(f.type)}" for f in arrow) + ">"
    if pa.types.is_list(arrow):
        return f"ARRAY<{bigquery_type(arrow.value_type)}>"
    return _BIGQUERY[arrow]


def ddl_columns(table: str) -> str:
    """The column definitions of event table ``table`` for its ``CREATE TABLE`` (BigQuery)."""
    return ",\n  ".join(c.ddl for c in columns(table))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def ddl_placeholders() -> dict[str, typing.Callable[[], str]]:
    """What the warehouse SQL may use: ``${<table>_columns}`` for every event table and ``${<model>_struct}`` (e.g.
    ``${model_score_struct}``) for every model nested in an event, for tables that copy such a column."""
    out: dict[str, typing.Callable[[], str]] = {}
    for name, table in EVENT_TABLES.items():
        out[f"{name}_columns"] = functools.partial(ddl_columns, name)
        for f in fields(table.model):
            if f.nested is not None and f.type is not None:
                struct = f.type.value_type if f.repeated else f.type
                out[f"{_snake(f.nested.__name__)}_struct"] = functools.partial(bigquery_type, struct)
    return out


def _row_value(value: Any, column_type: pa.DataType) -> Any:
    if isinstance(value, dt.datetime):
        # In UTC: pyarrow keeps the wall time of an aware datetime with another offset.
        return value.astimezone(dt.UTC)
    if isinstance(value, str) and column_type == TIMESTAMP:
        return dt.datetime.fromisoformat(value).astimezone(dt.UTC)
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump()
    if isinstance(value, list):
        return [v.model_dump() if isinstance(v, pydantic.BaseModel) else v for v in value]
    return value


def table_row(table: str, event: pydantic.BaseModel, load: Mapping[str, Any]) -> dict[str, Any]:
    """The row of ``event`` in event table ``table``; ``load`` holds the load metadata columns' values."""
    row: dict[str, Any] = {}
    for c in columns(table):
        if c.field is None:
            row[c.name] = load[c.name]
            continue
        value = getattr(event, c.field)
        if c.item is not None:
            value = value[c.item]
        elif c.features is not None:
            row[c.name] = {column_name(n): value.get(n) for n in c.features}
            continue
        row[c.name] = _row_value(value, c.type)
    return row
