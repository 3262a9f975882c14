-- One column's drift test on one window against the champion's frozen reference (written by drift_check).
CREATE TABLE IF NOT EXISTS `${dataset}.drift_reports` (
  report_id STRING NOT NULL,
  window_start DATE NOT NULL,
  window_end DATE NOT NULL,
  model_version STRING NOT NULL,
  column_name STRING NOT NULL,
  method STRING NOT NULL,
  statistic FLOAT64,
  threshold FLOAT64,
  drifted BOOL NOT NULL,
  mlflow_run_id STRING,
  computed_at TIMESTAMP NOT NULL
)
PARTITION BY window_end
CLUSTER BY column_name
