-- One column's drift check on one day against its model's training reference (written by drift_check): the PSI
-- (statistic), the threshold it had to pass that day, the verdict, the day's rows with a value and, for a
-- categorical, the share of values never seen in training. A re-run of the day replaces the day's rows.
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
  n INT64 NOT NULL,
  unseen_share FLOAT64,
  mlflow_run_id STRING,
  computed_at TIMESTAMP NOT NULL
)
PARTITION BY window_end
CLUSTER BY column_name
