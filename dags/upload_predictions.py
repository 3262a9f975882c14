"""
### upload_predictions

Moves the **prediction and outcome streams** (Redis) into the **warehouse** — DuckDB by default, BigQuery in
production — exactly once: each batch is decoded against its event schema and checked against the transaction
contract (pandera, every failure with its reason); bad entries go to `quarantine` with the reason, good rows are
staged and MERGEd on their event id into `prediction_logs` / `outcomes`, and only then are the entries acknowledged
and trimmed from the stream. Entries a dead uploader left pending are claimed (XAUTOCLAIM).

* **Schedule:** hourly, and manual (*Trigger*). Each run drains what is in the streams, whatever its data interval:
  a **backfill** is harmless (it finds nothing new, or loads what is there once).
* **Retries:** 3, with exponential backoff (30 s → 10 min; shared by every DAG, `dags/common/defaults.py`). When
  the last try fails, an **alert** is logged and, with `SHADOWGATE_ALERT_WEBHOOK_URL` set, posted there.
* **Staleness:** `check_freshness` alerts when no upload has succeeded for `SHADOWGATE_ALERT_UPLOAD_STALE_AFTER_H`
  (6) hours.
* **Reconciliation:** entries produced = rows in the table + rows in `quarantine` (see the task's return value).
* **Redis:** `check_redis` records alerts on memory above 80 % of `maxmemory`, an eviction policy other than
  `noeviction`, a consumer group lagging past `SHADOWGATE_ALERT_REDIS_GROUP_MAX_LAG` entries, and a group idle past
  `SHADOWGATE_ALERT_REDIS_GROUP_MAX_IDLE_H` hours with entries it has not consumed (it blocks trimming).
* **Produces** the asset `prediction_logs`: `canary_guard` judges the canaries on the decisions just loaded.
* **Size:** batches of `SHADOWGATE_WAREHOUSE_UPLOAD_BATCH_SIZE` (100,000) entries, two in flight: ~0.9 GB peak
  whatever the backlog; ~60,000 events/s into DuckDB on 2 cores (`make bench-upload`).
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import dag, task
from common.assets import PREDICTION_LOGS
from common.defaults import DEFAULT_ARGS


@dag(
    dag_id="upload_predictions",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["shadowgate", "warehouse"],
    default_args=DEFAULT_ARGS,
)
def upload_predictions() -> None:
    @task
    def check_freshness() -> dict[str, object]:
        import redis

        from shadowgate.config import AlertSettings, RedisSettings
        from shadowgate.pipelines.alerts import Alert, send_alert
        from shadowgate.pipelines.upload import upload_freshness

        settings = AlertSettings()
        client = redis.Redis.from_url(RedisSettings().resolved_url, socket_timeout=10)
        try:
            freshness = upload_freshness(
                client, now=dt.datetime.now(dt.UTC), stale_after_h=settings.upload_stale_after_h
            )
        finally:
            client.close()
        if freshness.stale:
            url = settings.webhook_url
            send_alert(
                Alert(
                    title="upload_predictions is stale",
                    text=f"no upload has succeeded for {freshness.age_h:.1f} h",
                    details={"last_success": str(freshness.last_success)},
                ),
                webhook_url=url.get_secret_value() if url else None,
            )
        return {"age_h": round(freshness.age_h, 3), "stale": freshness.stale}

    @task(outlets=[PREDICTION_LOGS])
    def upload_streams() -> dict[str, object]:
        from shadowgate.config import PathSettings, RedisSettings, ServingSettings, WarehouseSettings
        from shadowgate.pipelines.upload import record_success, stream_readers
        from shadowgate.pipelines.upload import upload_streams as run
        from shadowgate.storage import open_warehouse
        from shadowgate.storage.redis_streams import stream_client

        serving, settings = ServingSettings(), WarehouseSettings()
        client = stream_client(RedisSettings().resolved_url, socket_timeout=30)
        warehouse = open_warehouse(settings, home=PathSettings().home)
        try:
            summary = run(
                readers=stream_readers(
                    client, predictions_stream=serving.predictions_stream, outcomes_stream=serving.outcomes_stream
                ),
                warehouse=warehouse,
                batch_size=settings.upload_batch_size,
                read_size=settings.upload_read_size,
            )
            record_success(client, dt.datetime.now(dt.UTC))
            counts = {t: warehouse.count(t) for t in ("prediction_logs", "outcomes", "quarantine")}
        finally:
            warehouse.close()
            client.close()
        return {**summary.as_dict(), "table_rows": counts}

    @task(trigger_rule="all_done")  # after a failed upload too: that is when Redis fills up
    def check_redis() -> dict[str, object]:
        from shadowgate.config import AlertSettings, PathSettings, RedisSettings, ServingSettings, WarehouseSettings
        from shadowgate.pipelines.redis_ops import check_redis as run
        from shadowgate.storage import open_warehouse
        from shadowgate.storage.redis_streams import stream_client

        serving, alerts = ServingSettings(), AlertSettings()
        client = stream_client(RedisSettings().resolved_url, socket_timeout=30)
        warehouse = open_warehouse(WarehouseSettings(), home=PathSettings().home)
        try:
            return run(
                client=client,
                warehouse=warehouse,
                streams=[serving.predictions_stream, serving.outcomes_stream],
                at=dt.datetime.now(dt.UTC),
                memory_fraction=alerts.redis_memory_fraction,
                max_lag=alerts.redis_group_max_lag,
                max_idle_h=alerts.redis_group_max_idle_h,
                webhook_url=alerts.webhook_url.get_secret_value() if alerts.webhook_url else None,
            )
        finally:
            warehouse.close()
            client.close()

    check_freshness() >> upload_streams() >> check_redis()


upload_predictions()
