"""Synthetic ``labeled_predictions`` rows with known properties, written straight into a DuckDB warehouse.

Each purchase has a true default probability; its label is drawn from it. The champion scores the probability
through heavy noise, the challenger through light noise (so the challenger has the higher AUC, by construction), and
``challenger-b`` through the champion's noise level. Rows of a week are spread evenly over its seven days.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from shadowgate.storage.duckdb import DuckDBWarehouse

EARLY_DAYS, FINAL_DAYS = 17, 90
NOISE = {"champion": 1.2, "challenger": 0.4, "challenger-b": 1.2}
VERSIONS = {"champion": "1", "challenger": "2", "challenger-b": "3"}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def labeled_rows(
    week_start: dt.date,
    n: int,
    *,
    seed: int,
    models: Sequence[str] = ("champion", "challenger"),
    default_rate_logit: float = -2.2,
    experiment_id: str | None = None,
    noise: Mapping[str, float] | None = None,
    versions: Mapping[str, str] | None = None,
) -> pa.Table:
    """``n`` approved, fully matured decisions of the week starting ``week_start`` (both labels set); ``noise``
    overrides a model's noise level (:data:`NOISE`), e.g. to make it rank worse in some weeks; ``versions`` a
    model's version (:data:`VERSIONS`), e.g. a retrained challenger."""
    levels = {**NOISE, **(noise or {})}
    version_of = {**VERSIONS, **(versions or {})}
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    p_true = _sigmoid(default_rate_logit + 1.3 * risk)
    final = rng.random(n) < p_true
    early = final | (rng.random(n) < 0.03)
    start = dt.datetime(week_start.year, week_start.month, week_start.day, tzinfo=dt.UTC)
    offsets = np.linspace(0, 7 * 86_400 - 1, n)
    stamps = [start + dt.timedelta(seconds=float(s)) for s in offsets]
    scores = []
    model_scores = {m: _sigmoid(default_rate_logit + 1.3 * risk + rng.normal(scale=levels[m], size=n)) for m in models}
    for i in range(n):
        scores.append(
            [
                {
                    "alias": m,
                    "model_version": version_of[m],
                    "score": float(model_scores[m][i]),
                    "latency_us": 10.0,
                    "status": "ok",
                    "error": None,
                }
                for m in models
            ]
        )
    segment_rng = np.random.default_rng(seed + 1)
    amount = np.round(segment_rng.lognormal(5.3, 0.8, n), 2)
    bands = np.select([amount < 100, amount < 500, amount < 1000], ["0-100", "100-500", "500-1000"], "1000+")
    return pa.table(
        {
            "prediction_id": [f"{week_start:%Y%m%d}{seed:04d}{i:08d}" for i in range(n)],
            "transaction_id": [f"tx_{week_start:%Y%m%d}_{seed}_{i}" for i in range(n)],
            "customer_id_hash": [f"c{i % 997}" for i in range(n)],
            "event_timestamp": stamps,
            "served_at": stamps,
            "served_by": ["champion@1"] * n,
            "decision": ["approve"] * n,
            "policy_name": ["conservative"] * n,
            "policy_version": ["1"] * n,
            "experiment_id": [experiment_id] * n,
            "arm": ["control" if experiment_id else None] * n,
            "propensity": [1.0 if experiment_id else None] * n,
            "scores": scores,
            "customer_type": segment_rng.choice(["new", "returning"], n).tolist(),
            "merchant_category": segment_rng.choice(["electronics", "fashion", "home"], n).tolist(),
            "channel": segment_rng.choice(["web", "app"], n).tolist(),
            "amount": amount,
            "amount_band": bands.tolist(),
            "early_defaulted": early,
            "early_matured_at": [s + dt.timedelta(days=EARLY_DAYS) for s in stamps],
            "final_defaulted": final,
            "final_matured_at": [s + dt.timedelta(days=FINAL_DAYS) for s in stamps],
            "outcome_events": np.full(n, 2, dtype=np.int64),
            "labeled_as_of": [s + dt.timedelta(days=FINAL_DAYS) for s in stamps],
        }
    )


def insert_labeled(warehouse: DuckDBWarehouse, rows: pa.Table) -> None:
    """Append ``rows`` to the warehouse's ``labeled_predictions`` (columns in the table's order)."""
    ref = f'{warehouse.qualified}."labeled_predictions"'
    schema = warehouse.query(f"SELECT * FROM {ref} LIMIT 0").schema
    table = rows.select(schema.names).cast(schema)
    con = warehouse._con  # a test fixture writes the table the join would
    con.register("incoming_rows", table)
    try:
        con.execute(f"INSERT INTO {ref} SELECT * FROM incoming_rows")
    finally:
        con.unregister("incoming_rows")


def as_logged(rows: pa.Table) -> pa.Table:
    """The ``prediction_logs`` rows of labelled decisions (same ids, times, amounts, policy and scores; the other
    columns those of a valid example decision): what the promotion gate's applicant figures and latencies read."""
    import datetime as dt

    from shadowgate.storage.warehouse import arrow_schema
    from tests.warehouse_rows import prediction_row

    base = prediction_row(0, at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    out = []
    for r in rows.select(
        ["prediction_id", "transaction_id", "customer_id_hash", "event_timestamp", "amount", "policy_name", "scores"]
    ).to_pylist():
        out.append({**base, **r, "served_at": r["event_timestamp"], "served_by": "champion@v1"})
    return pa.Table.from_pylist(out, schema=arrow_schema("prediction_logs"))
