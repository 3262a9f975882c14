-- One figure of one model (or one comparison of two) on one cohort week, written by weekly_performance.
-- * cohort_start / cohort_end: the purchases' week [start, end) by event_timestamp (Monday to Monday, UTC);
-- * label: 'early' (instalment 2 late or missed, or a default, by day 17) or 'final' (a default by day 90);
-- * population: which rows the figure is computed on, e.g. 'approved_matured' (decisions the champion approved whose
--   label has matured: the only ones with an outcome) or 'approved_matured:approved_by_model' for a policy figure;
-- * model: 'alias@version', or 'treatment@v vs control@v' for a comparison; segment / segment_value: 'all' / 'all'
--   or e.g. 'customer_type' / 'new';
-- * metric_id: a deterministic key of (experiment, cohort, label, model, segment, value, metric): a re-run of the
--   same week MERGEs onto its own rows (replaces the figures, never duplicates them).
CREATE TABLE IF NOT EXISTS `${dataset}.model_metrics` (
  metric_id STRING NOT NULL,
  experiment_id STRING NOT NULL,
  cohort_start DATE NOT NULL,
  cohort_end DATE NOT NULL,
  label STRING NOT NULL,
  population STRING NOT NULL,
  model STRING NOT NULL,
  alias STRING,
  model_version STRING,
  segment STRING NOT NULL,
  segment_value STRING NOT NULL,
  metric STRING NOT NULL,
  value FLOAT64,
  n INT64 NOT NULL,
  n_positive INT64,
  as_of TIMESTAMP NOT NULL,
  mlflow_run_id STRING
)
PARTITION BY cohort_start
CLUSTER BY experiment_id, model, metric
