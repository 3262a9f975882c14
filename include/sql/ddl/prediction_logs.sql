-- Kept SHADOWGATE_WAREHOUSE_RETENTION_DAYS (730) days: BigQuery expires older partitions itself; on DuckDB the
-- daily retention DAG deletes them (maintenance/expire).
-- One row per served decision (the PredictionEvent), every model's score nested. The columns are derived from the
-- event model (shadowgate.events.schemas): its fields, the contract inputs flattened, the features as one struct
-- with a field per name of every known feature set, then the load metadata.
-- Partitioned by the purchase time (event_timestamp), the time every evaluation filters on (join_ground_truth's
-- cohorts, the weekly evaluation); it equals the decision time in production. A BigQuery table created by an
-- earlier version is partitioned by DATE(served_at) and keeps that: BigQuery cannot change a table's partitioning
-- in place, and CREATE TABLE IF NOT EXISTS leaves it as it is (everything still works, only pruning is weaker). To
-- migrate: pause upload_predictions; run this statement with the table named prediction_logs_new (it keeps the
-- columns' modes, which CREATE TABLE … AS SELECT would not); INSERT INTO prediction_logs_new SELECT * FROM
-- prediction_logs; compare the row counts; DROP TABLE prediction_logs; ALTER TABLE prediction_logs_new RENAME TO
-- prediction_logs; unpause the uploader (the stream holds what arrived meanwhile).
CREATE TABLE IF NOT EXISTS `${dataset}.prediction_logs` (
  ${prediction_logs_columns}
)
PARTITION BY DATE(event_timestamp)
CLUSTER BY customer_id_hash, served_by
OPTIONS (partition_expiration_days = ${retention_days})
