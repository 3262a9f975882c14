-- Kept SHADOWGATE_WAREHOUSE_RETENTION_DAYS (730) days: BigQuery expires older partitions itself; on DuckDB the
-- daily retention DAG deletes them (maintenance/expire).
-- Repayments, missed instalments and defaults (the OutcomeEvent), one row per event. The columns are derived from
-- the event model (shadowgate.events.schemas).
CREATE TABLE IF NOT EXISTS `${dataset}.outcomes` (
  ${outcomes_columns}
)
PARTITION BY DATE(event_timestamp)
CLUSTER BY transaction_id
OPTIONS (partition_expiration_days = ${retention_days})
