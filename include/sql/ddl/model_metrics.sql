-- One metric of one model on one evaluation window (written by weekly_performance).
CREATE TABLE IF NOT EXISTS `${dataset}.model_metrics` (
  run_key STRING NOT NULL,
  window_start DATE NOT NULL,
  window_end DATE NOT NULL,
  alias STRING NOT NULL,
  model_version STRING NOT NULL,
  metric STRING NOT NULL,
  value FLOAT64,
  n INT64 NOT NULL,
  mlflow_run_id STRING,
  computed_at TIMESTAMP NOT NULL
)
PARTITION BY window_end
CLUSTER BY model_version
