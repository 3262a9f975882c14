-- Early performance estimates (written by drift_check): per day and model, the default rate and AUC its own scores
-- predict on the day's approved decisions, with 95 % ranges — an estimate, never evidence (it cannot see a concept
-- shift) and never read by the promotion gate. Once the day's final labels mature, a later drift_check run adds the
-- realised figures beside it (realised_*), so the two can be compared.
CREATE TABLE IF NOT EXISTS `${dataset}.performance_estimates` (
  estimate_id STRING NOT NULL,
  day DATE NOT NULL,
  alias STRING NOT NULL,
  model_version STRING NOT NULL,
  population STRING NOT NULL,
  n INT64,
  expected_defaults FLOAT64,
  default_rate FLOAT64,
  default_rate_low FLOAT64,
  default_rate_high FLOAT64,
  auc FLOAT64,
  auc_low FLOAT64,
  auc_high FLOAT64,
  computed_at TIMESTAMP,
  realised_n INT64,
  realised_defaults INT64,
  realised_default_rate FLOAT64,
  realised_auc FLOAT64,
  realised_as_of TIMESTAMP
)
PARTITION BY day
CLUSTER BY alias
