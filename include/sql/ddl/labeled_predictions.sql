-- Predictions whose payment cycle has run, joined with their outcome (filled by join_ground_truth). The scores
-- are prediction_logs' (the ModelScore struct, derived from the event model).
CREATE TABLE IF NOT EXISTS `${dataset}.labeled_predictions` (
  prediction_id STRING NOT NULL,
  transaction_id STRING NOT NULL,
  customer_id_hash STRING NOT NULL,
  served_at TIMESTAMP NOT NULL,
  served_by STRING NOT NULL,
  decision STRING NOT NULL,
  experiment_id STRING,
  arm STRING,
  propensity FLOAT64,
  scores ARRAY<${model_score_struct}>,
  defaulted BOOL NOT NULL,
  outcome_observed_at TIMESTAMP,
  maturity_days INT64 NOT NULL,
  labeled_at TIMESTAMP NOT NULL
)
PARTITION BY DATE(served_at)
CLUSTER BY served_by
