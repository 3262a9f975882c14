-- Kept SHADOWGATE_WAREHOUSE_RETENTION_DAYS (730) days: BigQuery expires older partitions itself; on DuckDB the
-- daily retention DAG deletes them (maintenance/expire).
-- One approved decision whose payment cycle has run far enough for its early label (written by join_ground_truth,
-- include/sql/merge/labeled_predictions.sql; the rules are in queries/ground_truth_labels.sql). Denied and
-- manual-review decisions are never here: they got no credit (or its final answer is not logged).
-- * early_defaulted: instalment 2 late or missed, or a default, known by early_matured_at
--   (= event_timestamp + early_maturity_days, 17 by default). Never NULL: a row exists once it is mature.
-- * final_defaulted: a default known by final_matured_at (= event_timestamp + maturity_days, 90 by default); both
--   NULL until then.
-- * outcome_events: the transaction's outcomes known by labeled_as_of (the as_of of the run that wrote the row last).
-- * segments for the weekly evaluation: customer_type 'new' when customer_tenure_days < 90 (the decision policies'
--   new-customer rule, shadowgate.features.NEW_CUSTOMER_DAYS), else 'returning'; amount_band '0-100', '100-500',
--   '500-1000', '1000+' (lower bound included, in the purchase's currency).
-- Partitioned by the purchase time, the time every evaluation filters on; clustered by what evaluations select and
-- group on (the experiment, then the deciding model).
CREATE TABLE IF NOT EXISTS `${dataset}.labeled_predictions` (
  prediction_id STRING NOT NULL,
  transaction_id STRING NOT NULL,
  customer_id_hash STRING NOT NULL,
  event_timestamp TIMESTAMP NOT NULL,
  served_at TIMESTAMP NOT NULL,
  served_by STRING NOT NULL,
  decision STRING NOT NULL,
  policy_name STRING NOT NULL,
  policy_version STRING NOT NULL,
  experiment_id STRING,
  arm STRING,
  propensity FLOAT64,
  scores ARRAY<${model_score_struct}>,
  customer_type STRING NOT NULL,
  merchant_category STRING NOT NULL,
  channel STRING NOT NULL,
  amount FLOAT64 NOT NULL,
  amount_band STRING NOT NULL,
  early_defaulted BOOL NOT NULL,
  early_matured_at TIMESTAMP NOT NULL,
  final_defaulted BOOL,
  final_matured_at TIMESTAMP,
  outcome_events INT64 NOT NULL,
  labeled_as_of TIMESTAMP NOT NULL
)
PARTITION BY DATE(event_timestamp)
CLUSTER BY experiment_id, served_by
OPTIONS (partition_expiration_days = ${retention_days})
