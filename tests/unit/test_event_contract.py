"""One event contract: every form of an event agrees with its pydantic model, and fails this file if it does not.

The forms: the model itself, the stream entry (``to_stream_fields``), the shadow process's hand-built encoder
(``ShadowWorker.event_fields``), the Arrow schema the fast decoder parses payloads with, the warehouse Arrow schema,
the BigQuery DDL as rendered (parsed back with sqlglot), the table DuckDB creates from it, and the fast decoder's
checks (each model constraint must be enforced by both decoders alike).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import sys
import types
import typing
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.json as pj
import pydantic
import pytest
import sqlglot
from sqlglot import exp

from shadowgate.events import ArmAssignment, ModelScore, OutcomeEvent, PredictionEvent
from shadowgate.events.base import ContractInputs, FeatureVector
from shadowgate.events.schemas import (
    EVENT_TABLES,
    TIMESTAMP,
    EventTable,
    columns,
    ddl_placeholders,
    fields,
    payload_schema,
    table_schema,
)
from shadowgate.features import FEATURE_NAMES
from shadowgate.pipelines.stream_decode import decode, decode_strict
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.redis_streams import Entry
from shadowgate.storage.warehouse import SqlLibrary, arrow_schema, default_sql_dir
from tests.integration.stream_events import outcome_fields, prediction_fields

NOW = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)
EXAMPLES = {"prediction_logs": prediction_fields, "outcomes": outcome_fields}


# ------------------------------------------------------------------------------------------------ the rule

_SCALAR = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def _expected(annotation: Any) -> tuple[pa.DataType, bool]:
    """The warehouse type and nullability the brief's rule gives a model annotation, written out independently of
    ``shadowgate.events.schemas``: str → string, int → int64, float → float64, aware datetime → timestamp, ``X |
    None`` → nullable, ``list[Model]`` → list of struct, ``Literal`` → string."""
    nullable = False
    while True:
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is typing.Annotated:
            annotation = args[0]
        elif origin in (typing.Union, types.UnionType):
            nullable, annotation = True, next(a for a in args if a is not type(None))
        else:
            break
    if origin is list:
        return pa.list_(_expected(args[0])[0]), True  # BigQuery has no required ARRAY
    if origin is typing.Literal:
        return pa.string(), nullable
    if annotation is pydantic.AwareDatetime:
        return TIMESTAMP, nullable
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return pa.struct([(n, _expected(f.annotation)[0]) for n, f in annotation.model_fields.items()]), nullable
    return _SCALAR[annotation], nullable


def _plain(t: pa.DataType) -> pa.DataType:
    """``t`` with list items named alike (DuckDB names them after the column, pyarrow ``item``)."""
    if pa.types.is_list(t):
        return pa.list_(_plain(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([(f.name, _plain(f.type)) for f in t])
    return t


@pytest.mark.parametrize("table", sorted(EVENT_TABLES))
def test_every_model_field_has_its_column_of_the_rule_s_type(table: str) -> None:
    spec = EVENT_TABLES[table]
    schema = table_schema(table)
    by_field: dict[str, list[str]] = {}
    for c in columns(table):
        by_field.setdefault(c.field or "<load>", []).append(c.name)
    assert list(by_field) == [spec.key_field, *(n for n in spec.model.model_fields if n != spec.key_field), "<load>"]
    assert schema.names[0] == spec.key and by_field["<load>"] == ["stream_entry_id", "loaded_at"]
    for name, info in spec.model.model_fields.items():
        marker = next((m for m in info.metadata if isinstance(m, ContractInputs | FeatureVector)), None)
        if isinstance(marker, ContractInputs):
            from shadowgate.contract import TRANSACTION_FIELDS

            flattened = [f.name for f in TRANSACTION_FIELDS]
            wanted = [n for n in flattened if n not in marker.excluded and n not in spec.model.model_fields]
            assert by_field[name] == wanted
            continue
        if isinstance(marker, FeatureVector):
            assert schema.field(name).type == pa.struct([(n.replace("=", "__"), pa.float64()) for n in FEATURE_NAMES])
            continue
        column = spec.key if name == spec.key_field else name
        kind, nullable = _expected(info.annotation)
        assert (schema.field(column).type, schema.field(column).nullable) == (kind, nullable), name


@pytest.mark.parametrize("table", sorted(EVENT_TABLES))
def test_the_payload_parses_into_the_model_s_values(table: str) -> None:
    model = EVENT_TABLES[table].model
    payload = json.loads(EXAMPLES[table](1)["payload"])
    # The stream entry: every field, in the model's order, but an optional one written only when set (an outcome's
    # delivered_at: a payload without it is byte for byte what the previous code wrote).
    omitted = [n for n, f in model.model_fields.items() if n not in payload]
    assert list(payload) == [n for n in model.model_fields if n not in omitted]
    assert all(model.model_fields[n].exclude_if is not None for n in omitted)
    array = isinstance(payload.get("features"), list)
    schema = payload_schema(model, features_as_array=array)
    assert schema.names == list(model.model_fields)
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    parsed = pj.read_json(io.BytesIO(orjson.dumps(payload)), parse_options=options).to_pylist()[0]
    # Every field and every nested one, each value its own type (timestamps as text); a left-out field is null.
    assert parsed == {**payload, **dict.fromkeys(omitted)}


def test_the_shadow_encoder_writes_exactly_the_model_s_fields() -> None:
    # Built by hand for speed (no pydantic per event): this is what keeps it in step with PredictionEvent.
    from shadowgate.serving.shadow import ShadowJob
    from tests.unit.test_shadow import _frame, _Sink, _snapshot, _tx, _worker

    sink = _Sink()
    worker = _worker(sink)
    worker.set_models(_snapshot(champion=0.1, challenger=0.9))
    worker.process([ShadowJob.from_frame(orjson.loads(_frame(_tx(3), 0.1, canary=True)))])
    [(_, entry, _)] = sink.events
    payload = json.loads(entry["payload"])
    assert list(payload) == list(PredictionEvent.model_fields)
    assert [list(s) for s in payload["scores"]] == [list(ModelScore.model_fields)] * 2
    assert [list(a) for a in payload["assignments"]] == [list(ArmAssignment.model_fields)]
    options = pj.ParseOptions(
        explicit_schema=payload_schema(PredictionEvent, features_as_array=True), unexpected_field_behavior="error"
    )
    assert pj.read_json(io.BytesIO(entry["payload"].encode()), parse_options=options).to_pylist()[0] == payload


def _bigquery_columns(ddl: str) -> list[tuple[str, pa.DataType, bool]]:
    """``(name, type, nullable)`` of each column of a BigQuery CREATE TABLE, parsed by sqlglot."""
    t = exp.DataType.Type
    scalars = {t.TEXT: pa.string(), t.BIGINT: pa.int64(), t.DOUBLE: pa.float64(), t.BOOLEAN: pa.bool_(),
               t.TIMESTAMPTZ: TIMESTAMP}  # fmt: skip

    def arrow(kind: exp.DataType) -> pa.DataType:
        if kind.this == t.STRUCT:
            return pa.struct([(c.name, arrow(c.args["kind"])) for c in kind.expressions])
        if kind.this == t.ARRAY:
            return pa.list_(arrow(kind.expressions[0]))
        return scalars[kind.this]

    create = sqlglot.parse_one(ddl, read="bigquery")
    assert isinstance(create, exp.Create)
    return [
        (c.name, arrow(c.args["kind"]), not any(isinstance(k.kind, exp.NotNullColumnConstraint) for k in c.constraints))
        for c in create.this.expressions
    ]


@pytest.mark.parametrize("table", sorted(EVENT_TABLES))
def test_the_rendered_ddl_is_the_warehouse_schema(table: str) -> None:
    ddl = SqlLibrary(default_sql_dir(), dataset="p.d", dialect="bigquery").render(f"ddl/{table}")
    assert _bigquery_columns(ddl) == [(f.name, f.type, f.nullable) for f in arrow_schema(table)]


@pytest.mark.parametrize("table", sorted(EVENT_TABLES))
def test_duckdb_creates_the_warehouse_schema_and_loads_the_example_back(table: str) -> None:
    with DuckDBWarehouse(":memory:", sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()
        created = warehouse.query(f"SELECT * FROM shadowgate.{table} LIMIT 0").schema
        described = warehouse.query(f"DESCRIBE shadowgate.{table}").to_pylist()
        expected = arrow_schema(table)
        assert [(f.name, _plain(f.type)) for f in created] == [(f.name, _plain(f.type)) for f in expected]
        assert [(d["column_name"], d["null"] == "YES") for d in described] == [(f.name, f.nullable) for f in expected]
        kind = "prediction" if table == "prediction_logs" else "outcome"
        entries = [Entry("1-0", EXAMPLES[table](1))]  # one entry: an outcome's received_at is the clock's
        batch = decode("s", kind, entries, NOW).table(table)
        warehouse.merge(table, staging=warehouse.stage(table, batch, batch_id="x"))
        stored = warehouse.query(f"SELECT * FROM shadowgate.{table}").to_pylist()
        assert stored == decode_strict("s", kind, entries, NOW).rows


def test_tables_that_copy_a_nested_event_model_use_its_derived_struct() -> None:
    with DuckDBWarehouse(":memory:", sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()

        def scores_type(table: str) -> pa.DataType:
            return warehouse.query(f"SELECT scores FROM shadowgate.{table} LIMIT 0").schema.field("scores").type

        assert _plain(scores_type("labeled_predictions")) == _plain(scores_type("prediction_logs"))
    library = SqlLibrary(default_sql_dir(), dataset="d", dialect="bigquery")
    assert all("${" not in library.render(name) for name in library.names() if name.startswith("ddl/"))


# ------------------------------------------------------------------------------------------------ constraints


def _violations(model: type[pydantic.BaseModel]) -> list[tuple[str, Any]]:
    """For every constrained field of ``model``: a value the model refuses (outside the allowed values, past a
    bound, against the pattern)."""
    out: list[tuple[str, Any]] = []
    for spec in fields(model):
        if spec.choices is not None:
            out.append((spec.name, "not_one_of_them"))
        for bound, step in (("ge", -1), ("gt", 0), ("le", 1), ("lt", 0)):
            limit = getattr(spec, bound)
            if limit is not None:
                out.append((spec.name, limit + step if step else limit))
        if spec.pattern is not None:
            out.append((spec.name, "has a space"))
    return out


_CASES = (
    [("outcome", (name,), v) for name, v in _violations(OutcomeEvent)]
    + [("prediction", (name,), v) for name, v in _violations(PredictionEvent)]
    + [("prediction", ("scores", 0, name), v) for name, v in _violations(ModelScore)]
    + [("prediction", ("assignments", 0, name), v) for name, v in _violations(ArmAssignment)]
)


def test_the_examples_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # So that the constraint cases below, one change away from these, test the fast path's checks.
    from shadowgate.pipelines import stream_decode

    def no_strict(*args: object, **kwargs: object) -> None:
        raise AssertionError("the example took the strict path")

    monkeypatch.setattr(stream_decode, "decode_strict", no_strict)
    for table, kind in (("prediction_logs", "prediction"), ("outcomes", "outcome")):
        assert stream_decode.decode("s", kind, [Entry("1-0", EXAMPLES[table](3))], NOW).table(table).num_rows == 1


@pytest.mark.parametrize(
    ("kind", "path", "value"), _CASES, ids=[f"{k}:{'.'.join(map(str, p))}={v}" for k, p, v in _CASES]
)
def test_every_model_constraint_is_enforced_by_both_decoders(kind: str, path: tuple[Any, ...], value: Any) -> None:
    fields_ = outcome_fields(3) if kind == "outcome" else prediction_fields(3)
    payload = json.loads(fields_["payload"])
    if path[0] == "assignments":
        payload["assignments"] = [
            {"experiment_id": "e", "experiment_version": "1", "arm": "a", "propensity": 0.5, "mode": "shadow"}
        ]
    target = payload
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    if path == ("event_id",):
        fields_["id"] = value  # the envelope names the same (invalid) id: only the pattern is wrong
    entry = Entry("1-0", {**fields_, "payload": json.dumps(payload, separators=(",", ":"))})
    fast, strict = (
        [q["reason"].split(":")[0] for q in decoder("s", kind, [entry], NOW).quarantine]
        for decoder in (decode, decode_strict)
    )
    # invalid_field, or for the version its own reasons (invalid_schema_version, future_schema_version).
    assert fast == strict and len(strict) == 1 and strict[0].startswith(("invalid", "future")), (path, value)


def test_the_fast_checks_carry_the_model_s_allowed_values_and_bounds() -> None:
    by_name = {f.name: f for f in fields(PredictionEvent)}
    assert by_name["decision"].choices == typing.get_args(typing.get_type_hints(PredictionEvent)["decision"])
    assert (by_name["propensity"].ge, by_name["propensity"].le, by_name["propensity"].null_ok) == (0.0, 1.0, True)
    assert by_name["score"].null_ok is False  # required though nullable: a missing key is not a null
    score = {f.name: f for f in by_name["scores"].children}
    assert score["status"].choices == ("ok", "error", "timeout", "skipped") and score["latency_us"].ge == 0.0
    outcome = {f.name: f for f in fields(OutcomeEvent)}
    assert outcome["event_type"].choices == ("instalment_paid", "instalment_late", "default")
    assert (outcome["amount"].ge, outcome["instalment_number"].ge) == (0.0, 1)
    assert outcome["instalment_number"].null_ok is False  # a model validator decides whether it may be null


# ------------------------------------------------------------------------------------------------ one declaration


class _AuditedOutcome(OutcomeEvent):
    """An event with one more field of each kind the rule maps, as a next version might add."""

    channel: typing.Literal["api", "batch"] = "api"
    tags: list[str] = pydantic.Field(default_factory=list)
    evidence: dict[str, Any] = pydantic.Field(default_factory=dict)


def test_one_declaration_gives_a_new_event_table_every_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        EVENT_TABLES, "audited", EventTable("audited", _AuditedOutcome, key="audit_id", time_column="received_at")
    )
    schema = table_schema("audited")
    assert schema.names[:3] == ["audit_id", "schema_version", "transaction_id"]
    assert schema.names[-5:] == ["channel", "tags", "evidence", "stream_entry_id", "loaded_at"]
    assert (schema.field("tags").type, schema.field("evidence").type) == (pa.list_(pa.string()), pa.string())
    ddl = ddl_placeholders()["audited_columns"]()
    assert "channel STRING NOT NULL" in ddl and "tags ARRAY<STRING>" in ddl and "evidence JSON NOT NULL" in ddl
    with pytest.raises(TypeError, match="evidence"):  # free-form JSON has no Arrow parse form: no fast path for it
        payload_schema(_AuditedOutcome)


# ------------------------------------------------------------------------------------------------ dependencies


def _loaded(imports: str, prefixes: tuple[str, ...]) -> list[str]:
    """Modules under ``prefixes`` that importing ``imports`` loads (in a fresh interpreter)."""
    code = f"import sys\nimport {imports}\nprint(sorted(m for m in sys.modules if m.startswith({prefixes!r})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return list(json.loads(result.stdout.replace("'", '"')))


def test_serving_and_pipelines_depend_on_events_not_on_each_other() -> None:
    domain = ("shadowgate.serving", "shadowgate.pipelines", "shadowgate.storage")
    assert _loaded("shadowgate.events, shadowgate.events.schemas", domain) == []
    assert _loaded("shadowgate.pipelines.upload, shadowgate.storage.duckdb", ("shadowgate.serving",)) == []
    assert _loaded("shadowgate.serving.shadow, shadowgate.serving.sidecar", ("shadowgate.pipelines",)) == []


def test_a_constraint_the_fast_decoder_cannot_check_is_refused() -> None:
    class Strict(OutcomeEvent):
        note: str = pydantic.Field(default="", max_length=10)

    with pytest.raises(TypeError, match=r"Strict\.note: .*max_length"):
        fields(Strict)


def test_every_validator_of_an_event_has_its_fast_path_counterpart() -> None:
    # The fast decoder mirrors field constraints by itself, not validators. Each one here is accounted for: a new
    # one must be too (mirrored in stream_decode, or its fields listed in NULL_NEEDS_VALIDATOR), then added here.
    mirrored = {
        # before-validators only accept more (aliases, array features): what the fast path refuses goes strict.
        (PredictionEvent, "_named_features"): "features: array/named forms checked by _features_ok",
        (PredictionEvent, "_json_typed_inputs"): "inputs parsed as the contract's struct, timestamps as text",
        (PredictionEvent, "_no_raw_customer_id"): "an unexpected key in inputs fails the Arrow parse",
        (OutcomeEvent, "_normalise_type"): "an alias is not one of the Literal's values: strict path",
        (OutcomeEvent, "_instalment_events_name_their_instalment"): "NULL_NEEDS_VALIDATOR",
    }
    found = set()
    for table in EVENT_TABLES.values():
        for model in (table.model, *(f.nested for f in fields(table.model) if f.nested is not None)):
            decorators = model.__pydantic_decorators__
            for name in (*decorators.field_validators, *decorators.model_validators):
                found.add((model, name))
    assert found == set(mirrored)


@pytest.mark.parametrize("table", sorted(EVENT_TABLES))
def test_the_merge_joins_on_the_declared_key_and_bounds_the_declared_time_column(table: str) -> None:
    spec = EVENT_TABLES[table]
    merge = SqlLibrary(default_sql_dir(), dataset="d", dialect="bigquery").source(f"merge/{table}")
    if table == "outcomes":
        # A re-sent outcome may carry another timestamp: it matches on its id alone (and its transaction id, which
        # the id is derived from: for BigQuery's clustering), never bounded by the batch's time range.
        assert f"ON t.{spec.key} = s.{spec.key} AND t.transaction_id = s.transaction_id\n" in merge
        assert "@min_ts" not in merge
        return
    assert f"ON t.{spec.key} = s.{spec.key} AND t.{spec.time_column} BETWEEN @min_ts AND @max_ts" in merge
