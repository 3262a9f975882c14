-- One row per served decision (the PredictionEvent), every model's score nested. The transaction's input columns
-- and the feature fields are generated from the contract (shadowgate.contract, shadowgate.features).
CREATE TABLE IF NOT EXISTS `${dataset}.prediction_logs` (
  prediction_id STRING NOT NULL,
  schema_version INT64 NOT NULL,
  transaction_id STRING NOT NULL,
  customer_id_hash STRING NOT NULL,
  merchant_id STRING NOT NULL,
  event_timestamp TIMESTAMP NOT NULL,
  served_at TIMESTAMP NOT NULL,
  ${input_columns},
  features STRUCT<${feature_fields}>,
  scores ARRAY<STRUCT<alias STRING, model_version STRING, score FLOAT64, latency_us FLOAT64, status STRING, error STRING>>,
  served_by STRING NOT NULL,
  score FLOAT64,
  decision STRING NOT NULL,
  risk_level STRING NOT NULL,
  reason_codes ARRAY<STRING>,
  experiment_id STRING,
  arm STRING,
  propensity FLOAT64,
  assignments ARRAY<STRUCT<experiment_id STRING, experiment_version STRING, arm STRING, propensity FLOAT64, mode STRING>>,
  policy_name STRING NOT NULL,
  policy_version STRING NOT NULL,
  stream_entry_id STRING NOT NULL,
  loaded_at TIMESTAMP NOT NULL
)
PARTITION BY DATE(served_at)
CLUSTER BY customer_id_hash, served_by
