"""Upload the prediction and outcome streams into the warehouse, exactly once.

For each stream, batch by batch: decode every entry against its event schema; check the transaction inputs against
the contract with pandera (lazy: every failure of every row, with its reason); write what fails to ``quarantine``
with the reason; stage the good rows and MERGE them on their event id; only then XACK the batch and trim the stream.

Why this is exactly once: nothing is acknowledged before the warehouse committed it, so a crash at any point leaves
the batch pending in the consumer group and the next run reads it again; the MERGE (and the quarantine's MERGE) skip
rows already there, so reading it again adds nothing twice. Entries left pending by a consumer that died are claimed
with XAUTOCLAIM once idle. Counts reconcile: entries produced = rows in the table + rows in quarantine.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from shadowgate.contract import TRANSACTION_FIELDS, Kind, pandera_schema
from shadowgate.features import FEATURE_NAMES
from shadowgate.serving.events import (
    OUTCOME,
    PREDICTION,
    MalformedEventError,
    OutcomeEvent,
    PredictionEvent,
    from_stream_fields,
)
from shadowgate.storage.redis_streams import Entry, StreamReader
from shadowgate.storage.warehouse import (
    OUTCOMES,
    PREDICTION_LOGS,
    QUARANTINE,
    Warehouse,
    arrow_schema,
    column_name,
    input_fields,
)

logger = logging.getLogger(__name__)

GROUP = "shadowgate-uploader"
"""The consumer group of the uploader on both streams."""


@dataclass(frozen=True)
class StreamUpload:
    """What one stream's upload did."""

    stream: str
    table: str
    batches: int = 0
    read: int = 0
    loaded: int = 0
    """Rows the MERGE inserted (a re-read batch inserts 0)."""
    quarantined: int = 0
    reclaimed: int = 0
    acked: int = 0
    trimmed: int = 0


@dataclass(frozen=True)
class UploadSummary:
    """What ``upload_streams`` did, JSON-able for the Airflow UI."""

    streams: list[StreamUpload] = field(default_factory=list)
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"streams": [asdict(s) for s in self.streams], "duration_s": round(self.duration_s, 3)}


@dataclass
class _Decoded:
    rows: list[dict[str, Any]] = field(default_factory=list)
    entry_ids: list[str] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ decoding


def _quarantine_row(stream: str, entry: Entry, reason: str, now: dt.datetime) -> dict[str, Any]:
    return {
        "quarantine_id": f"{stream}:{entry.entry_id}",
        "stream": stream,
        "stream_entry_id": entry.entry_id,
        "event_id": entry.fields.get("id"),
        "kind": entry.fields.get("kind"),
        "reason": reason[:2000],
        "raw": orjson.dumps(entry.fields).decode(),
        "quarantined_at": now,
    }


_KIND_CHECK: dict[Kind, Callable[[Any], bool]] = {
    Kind.STRING: lambda v: isinstance(v, str),
    Kind.INTEGER: lambda v: isinstance(v, int) and not isinstance(v, bool),
    Kind.FLOAT: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    Kind.TIMESTAMP: lambda v: isinstance(v, str),
}


def _input_problems(inputs: dict[str, Any]) -> list[str]:
    """Type problems of the logged transaction inputs (values are checked by pandera afterwards)."""
    problems = []
    for f in TRANSACTION_FIELDS:
        if f.name == "customer_id":
            continue
        if f.name not in inputs:
            problems.append(f"inputs.{f.name}: missing")
        elif not _KIND_CHECK[f.kind](inputs[f.name]):
            problems.append(f"inputs.{f.name}: expected {f.kind.value}, got {type(inputs[f.name]).__name__}")
    return problems


def _prediction_row(event: PredictionEvent, entry_id: str, now: dt.datetime) -> dict[str, Any]:
    inputs = event.inputs
    return {
        "prediction_id": event.event_id,
        "schema_version": event.schema_version,
        "transaction_id": event.transaction_id,
        "customer_id_hash": event.customer_id_hash,
        "merchant_id": event.merchant_id,
        "event_timestamp": event.event_timestamp,
        "served_at": event.served_at,
        **{f.name: inputs[f.name] for f in input_fields()},
        "features": {column_name(k): event.features[k] for k in FEATURE_NAMES},
        "scores": [s.model_dump() for s in event.scores],
        "served_by": event.served_by,
        "score": event.score,
        "decision": event.decision,
        "risk_level": event.risk_level,
        "reason_codes": event.reason_codes,
        "experiment_id": event.experiment_id,
        "arm": event.arm,
        "propensity": event.propensity,
        "assignments": [a.model_dump() for a in event.assignments],
        "policy_name": event.policy_name,
        "policy_version": event.policy_version,
        "stream_entry_id": entry_id,
        "loaded_at": now,
    }


def _outcome_row(event: OutcomeEvent, entry_id: str, now: dt.datetime) -> dict[str, Any]:
    return {
        "outcome_id": event.event_id,
        "schema_version": event.schema_version,
        "transaction_id": event.transaction_id,
        "event_type": event.event_type,
        "event_timestamp": event.event_timestamp,
        "instalment_number": event.instalment_number,
        "amount": event.amount,
        "received_at": event.received_at,
        "stream_entry_id": entry_id,
        "loaded_at": now,
    }


def decode_batch(stream: str, kind: str, entries: Sequence[Entry], now: dt.datetime) -> _Decoded:
    """Rows for the table and rows for quarantine (with the reason) — every entry lands in exactly one."""
    out = _Decoded()
    candidates: list[tuple[Entry, dict[str, Any], dict[str, Any]]] = []
    for entry in entries:
        try:
            event = from_stream_fields(entry.fields)
        except MalformedEventError as error:
            out.quarantine.append(_quarantine_row(stream, entry, str(error), now))
            continue
        if kind == PREDICTION and isinstance(event, PredictionEvent):
            problems = _input_problems(event.inputs)
            if set(event.features) != set(FEATURE_NAMES):
                problems.append("features: not the contract's feature set")
            if problems:
                out.quarantine.append(_quarantine_row(stream, entry, "invalid_inputs: " + "; ".join(problems), now))
                continue
            candidates.append((entry, _prediction_row(event, entry.entry_id, now), event.inputs))
        elif kind == OUTCOME and isinstance(event, OutcomeEvent):
            out.rows.append(_outcome_row(event, entry.entry_id, now))
            out.entry_ids.append(entry.entry_id)
        else:
            reason = f"wrong_kind: a {type(event).__name__} in the {kind} stream"
            out.quarantine.append(_quarantine_row(stream, entry, reason, now))
    if candidates:
        failures = _contract_failures([inputs for _, _, inputs in candidates])
        for i, (entry, row, _) in enumerate(candidates):
            if i in failures:
                reason = "contract: " + "; ".join(failures[i])
                out.quarantine.append(_quarantine_row(stream, entry, reason, now))
            else:
                out.rows.append(row)
                out.entry_ids.append(entry.entry_id)
    return out


def _contract_failures(inputs: Sequence[dict[str, Any]]) -> dict[int, list[str]]:
    """Row position → every contract check it fails (pandera, lazy), for the logged inputs of a batch."""
    import pandas as pd
    import pandera.errors

    schema = pandera_schema().remove_columns(["customer_id"])
    frame = pd.DataFrame.from_records(inputs, columns=[f.name for f in TRANSACTION_FIELDS if f.name != "customer_id"])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True, format="ISO8601", errors="coerce")
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


# ------------------------------------------------------------------------------------------------ loading


def _min_max(rows: Sequence[dict[str, Any]], column: str) -> tuple[Any, Any]:
    values = [r[column] for r in rows]
    return min(values), max(values)


def _commit(warehouse: Warehouse, table: str, rows: list[dict[str, Any]], ts_column: str | None) -> int:
    """Stage ``rows`` and MERGE them into ``table``; returns the rows inserted."""
    if not rows:
        return 0
    batch = pa.Table.from_pylist(rows, schema=arrow_schema(table))
    staging = warehouse.stage(table, batch, batch_id=uuid.uuid4().hex)
    low, high = _min_max(rows, ts_column) if ts_column else (None, None)
    return warehouse.merge(table, staging=staging, min_ts=low, max_ts=high).inserted


_TABLES = {PREDICTION: (PREDICTION_LOGS, "served_at"), OUTCOME: (OUTCOMES, "event_timestamp")}


def _batches(reader: StreamReader, batch_size: int) -> Iterator[list[Entry]]:
    """This consumer's pending entries first (a previous run's unacked batches), then new ones."""
    after = "0"
    while True:
        pending = reader.read_pending(batch_size, after=after)
        if not pending:
            break
        after = pending[-1].entry_id
        yield pending
    while True:
        fresh = reader.read_new(batch_size)
        if not fresh:
            return
        yield fresh


def upload_stream(
    *,
    reader: StreamReader,
    warehouse: Warehouse,
    kind: str,
    batch_size: int = 10_000,
    min_idle_ms: int = 60_000,
    max_batches: int | None = None,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> StreamUpload:
    """Drain one stream into its table (and quarantine), acking each batch after the warehouse committed it.

    Args:
        reader: the stream's consumer-group reader.
        warehouse: where rows go.
        kind: ``prediction`` or ``outcome`` (which event the stream carries).
        batch_size: entries per batch (memory is bounded by it, not by the backlog).
        min_idle_ms: entries pending this long for another consumer are taken over (it died).
        max_batches: stop after this many batches (None: until the stream is drained).
        clock: now (tests).
    """
    table, ts_column = _TABLES[kind]
    reader.ensure_group()
    reclaimed = len(reader.claim_stale(min_idle_ms=min_idle_ms))
    if reclaimed:
        logger.warning("%s: took over %d entries left pending by another consumer", reader.stream, reclaimed)
    batches = read = loaded = quarantined = acked = 0
    for entries in _batches(reader, batch_size):
        now = clock()
        decoded = decode_batch(reader.stream, kind, entries, now)
        quarantined += _commit(warehouse, QUARANTINE, decoded.quarantine, None)
        loaded += _commit(warehouse, table, decoded.rows, ts_column)
        # Only now: both MERGEs have committed.
        acked += reader.ack([e.entry_id for e in entries])
        batches += 1
        read += len(entries)
        if max_batches is not None and batches >= max_batches:
            break
    trimmed = reader.trim_acknowledged()
    return StreamUpload(
        stream=reader.stream,
        table=table,
        batches=batches,
        read=read,
        loaded=loaded,
        quarantined=quarantined,
        reclaimed=reclaimed,
        acked=acked,
        trimmed=trimmed,
    )


def upload_streams(
    *,
    readers: Sequence[tuple[StreamReader, str]],
    warehouse: Warehouse,
    batch_size: int = 10_000,
    min_idle_ms: int = 60_000,
) -> UploadSummary:
    """Upload every ``(reader, kind)`` stream; creates the tables first and drops staging left by a crash."""
    started = time.perf_counter()
    warehouse.ensure_tables()
    stale = warehouse.drop_stale_staging()
    if stale:
        logger.warning("dropped %d staging tables left by an interrupted load: %s", len(stale), ", ".join(stale))
    results = [
        upload_stream(reader=reader, warehouse=warehouse, kind=kind, batch_size=batch_size, min_idle_ms=min_idle_ms)
        for reader, kind in readers
    ]
    return UploadSummary(streams=results, duration_s=time.perf_counter() - started)
