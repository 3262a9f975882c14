"""Rows of prediction_logs and outcomes written straight into a warehouse (stage + MERGE, as the uploader does):
hand-built ones for rule tests, and a simulated world's purchases and outcome log for the DAG tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from shadowgate.events import OutcomeEvent, example_prediction_event
from shadowgate.events.outcome import outcome_event_id
from shadowgate.events.schemas import column_name, feature_union, table_row
from shadowgate.storage.warehouse import Warehouse, arrow_schema, unique_on_key

LOADED_AT = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def prediction_row(i: int, *, at: dt.datetime, decision: str = "approve", **columns: Any) -> dict[str, Any]:
    """The prediction_logs row of decision ``i`` (transaction ``tx_<i>``) on a purchase at ``at``, served then;
    ``columns`` overrides any column (``amount``, ``customer_tenure_days``, ``channel``, ...)."""
    event = example_prediction_event(i)
    row = table_row("prediction_logs", event, {"stream_entry_id": f"{i}-0", "loaded_at": LOADED_AT})
    return {**row, "event_timestamp": at, "served_at": at, "decision": decision, **columns}


def outcome_row(
    transaction_id: str,
    event_type: str,
    at: dt.datetime,
    instalment: int | None = None,
    *,
    amount: float = 32.5,
    received: dt.datetime | None = None,
    delivered: dt.datetime | None = None,
) -> dict[str, Any]:
    """The outcomes row of one signal about ``transaction_id``, known at ``at`` and received then (or at
    ``received``), with a stated delivery ``delivered`` if given."""
    event = OutcomeEvent(
        event_id=outcome_event_id(transaction_id, event_type, instalment),
        transaction_id=transaction_id,
        event_type=event_type,  # type: ignore[arg-type]
        event_timestamp=at,
        instalment_number=instalment,
        amount=amount,
        received_at=received or at,
        delivered_at=delivered,
    )
    return table_row("outcomes", event, {"stream_entry_id": "1-0", "loaded_at": LOADED_AT})


def load(warehouse: Warehouse, table: str, rows: Sequence[dict[str, Any]] | pa.Table) -> int:
    """Stage and MERGE ``rows`` into ``table``; the rows inserted."""
    batch = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows), schema=arrow_schema(table))
    if batch.num_rows == 0:
        return 0
    staging = warehouse.stage(table, unique_on_key(table, batch), batch_id=f"test_{table}")
    return warehouse.merge(table, staging=staging).inserted


def simulated_prediction_logs(
    transactions: pd.DataFrame,
    decisions: np.ndarray,
    scores: np.ndarray,
    *,
    shadow: dict[str, tuple[str, np.ndarray]] | None = None,
    first_id: int = 0,
) -> pa.Table:
    """prediction_logs rows of simulated purchases as the champion served them: decided at their purchase time
    (as in production), ``decisions[i]`` with ``scores[i]``, the features the serving path computes; ``shadow``:
    alias → (version, scores) of challengers that scored the same requests; ids from ``first_id`` (to load a later
    period of the same world beside an earlier one)."""
    from shadowgate.events import SCHEMA_VERSION
    from shadowgate.features import FEATURE_NAMES, FEATURE_SET, features_frame

    n = len(transactions)
    schema = arrow_schema("prediction_logs")
    features = features_frame(transactions)
    struct_type = schema.field("features").type
    by_name = {column_name(name): k for k, name in enumerate(FEATURE_NAMES)}
    features_struct = pa.StructArray.from_arrays(
        [
            pa.array(features[:, by_name[f.name]]) if f.name in by_name else pa.nulls(n, pa.float64())
            for f in struct_type
        ],
        fields=list(struct_type),
    )
    assert [f.name for f in struct_type] == [column_name(x) for x in feature_union()]
    ts = pd.DatetimeIndex(transactions["event_timestamp"]).tz_convert("UTC")
    columns: dict[str, Any] = {
        "prediction_id": [f"{first_id + k:032x}" for k in range(n)],
        "schema_version": np.full(n, SCHEMA_VERSION),
        "customer_id_hash": [f"h{c}" for c in transactions["customer_id"]],
        "served_at": ts,
        "features": features_struct,
        "feature_set": [FEATURE_SET] * n,
        "scores": [
            [{"alias": "champion", "model_version": "1", "score": float(s), "latency_us": 2.0, "status": "ok"}]
            + [
                {"alias": alias, "model_version": version, "score": float(v[i]), "latency_us": 9.0, "status": "ok"}
                for alias, (version, v) in (shadow or {}).items()
            ]
            for i, s in enumerate(scores)
        ],
        "served_by": ["champion@1"] * n,
        "score": scores.astype(float),
        "decision": decisions.astype(object),
        "risk_level": np.where(decisions == "approve", "low", np.where(decisions == "deny", "high", "medium")),
        "reason_codes": [[] for _ in range(n)],
        "experiment_id": [None] * n,
        "arm": [None] * n,
        "propensity": [None] * n,
        "assignments": [[] for _ in range(n)],
        "policy_name": ["conservative"] * n,
        "policy_version": ["1"] * n,
        "stream_entry_id": [f"{first_id + k + 1}-0" for k in range(n)],
        "loaded_at": [LOADED_AT] * n,
    }
    arrays = []
    for field in schema:
        if field.name in columns:
            values = columns[field.name]
        else:  # a contract input, stored as its own column
            values = ts if field.name == "event_timestamp" else transactions[field.name].to_numpy()
        arrays.append(values if isinstance(values, pa.Array) else pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def simulated_outcomes(outcomes: pd.DataFrame) -> pa.Table:
    """outcomes rows of the simulator's outcome log: each signal received when it became known, or, for a frame
    with a ``delivered_at`` column (a replayed feed), received now (:data:`LOADED_AT`) with that delivery stated."""
    from shadowgate.events import SCHEMA_VERSION

    n = len(outcomes)
    ts = pd.DatetimeIndex(outcomes["event_timestamp"]).tz_convert("UTC")
    instalment = outcomes["instalment"].to_numpy()
    columns = {
        "outcome_id": [
            outcome_event_id(t, e, int(k))
            for t, e, k in zip(outcomes["transaction_id"], outcomes["event_type"], instalment, strict=True)
        ],
        "schema_version": np.full(n, SCHEMA_VERSION),
        "transaction_id": outcomes["transaction_id"].to_numpy(),
        "event_type": outcomes["event_type"].to_numpy(),
        "event_timestamp": ts,
        "instalment_number": instalment,
        "amount": outcomes["amount"].to_numpy(),
        "received_at": [LOADED_AT] * n if "delivered_at" in outcomes else ts,
        "delivered_at": (
            pd.DatetimeIndex(outcomes["delivered_at"]).tz_convert("UTC") if "delivered_at" in outcomes else [None] * n
        ),
        "stream_entry_id": [f"{k + 1}-0" for k in range(n)],
        "loaded_at": [LOADED_AT] * n,
    }
    schema = arrow_schema("outcomes")
    return pa.Table.from_arrays([pa.array(columns[f.name], type=f.type) for f in schema], schema=schema)


def logged_half_year(world: Any, path: Any, *, champion_noise: float) -> Any:
    """A simulated half year as production would have logged and labelled it, in the DuckDB file ``path``: every
    purchase decided by a champion seeing the true default probability through ``champion_noise`` (logit scale;
    0: the truth itself), the approved purchases' outcomes, and their labels written by ``join_ground_truth`` as known
    91 days after the last purchase. Returns that instant (the as-of of a retraining that can read them all)."""

    from shadowgate.config import GroundTruthSettings
    from shadowgate.pipelines.ground_truth import join_ground_truth
    from shadowgate.storage.duckdb import DuckDBWarehouse
    from shadowgate.storage.warehouse import default_sql_dir

    p = np.clip(world.labels["default_probability"].to_numpy(), 1e-4, 1 - 1e-4)
    noise = np.random.default_rng(8).normal(scale=champion_noise, size=p.size) if champion_noise else 0.0
    champion = 1 / (1 + np.exp(-(np.log(p / (1 - p)) + noise)))
    decisions = np.where(champion < 0.2, "approve", "deny")
    first = world.transactions["event_timestamp"].min().normalize()
    as_of: dt.datetime = (first + pd.Timedelta(days=182 + 91)).to_pydatetime()
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()
        load(warehouse, "prediction_logs", simulated_prediction_logs(world.transactions, decisions, champion))
        granted = set(world.transactions.loc[decisions == "approve", "transaction_id"])
        outcomes = world.outcomes[world.outcomes["transaction_id"].isin(granted)].reset_index(drop=True)
        load(warehouse, "outcomes", simulated_outcomes(outcomes))
        join_ground_truth(
            warehouse, interval_start=first.to_pydatetime(), interval_end=as_of, settings=GroundTruthSettings()
        )
    return as_of
