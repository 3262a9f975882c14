-- Kept SHADOWGATE_WAREHOUSE_RETENTION_DAYS (730) days: BigQuery expires older partitions itself; on DuckDB the
-- daily retention DAG deletes them (maintenance/expire).
-- Stream entries that failed validation, kept whole with the reason: nothing is dropped silently.
CREATE TABLE IF NOT EXISTS `${dataset}.quarantine` (
  quarantine_id STRING NOT NULL,
  stream STRING NOT NULL,
  stream_entry_id STRING NOT NULL,
  event_id STRING,
  kind STRING,
  reason STRING NOT NULL,
  raw STRING NOT NULL,
  quarantined_at TIMESTAMP NOT NULL
)
PARTITION BY DATE(quarantined_at)
CLUSTER BY stream
OPTIONS (partition_expiration_days = ${retention_days})
