-- Kept SHADOWGATE_WAREHOUSE_RETENTION_DAYS (730) days: BigQuery expires older partitions itself; on DuckDB the
-- daily retention DAG deletes them (maintenance/expire).
-- A revision of the labels of one cohort week: a join_ground_truth run (as of detected_at) changed labels that had
-- already matured, because outcomes deciding them were delivered after that (written by merge/label_revisions from
-- the label versions in labeled_predictions; nothing in labeled_predictions is overwritten). A week evaluated before
-- detected_at was evaluated on the earlier labels: shadowgate.pipelines.ground_truth.weeks_to_reevaluate lists it.
-- * cohort_start / cohort_end: the purchases' week [start, end) by event_timestamp (Monday to Monday, UTC), as in
--   model_metrics; label: 'early' or 'final';
-- * revision: 1 for the week's first revision of that label, counted in detected_at order;
-- * labels_revised: decisions of the week whose label changed at detected_at;
-- * late_outcomes: the outcomes deciding those labels that arrived after the previous version was written.
CREATE TABLE IF NOT EXISTS `${dataset}.label_revisions` (
  cohort_start DATE NOT NULL,
  cohort_end DATE NOT NULL,
  label STRING NOT NULL,
  revision INT64 NOT NULL,
  detected_at TIMESTAMP NOT NULL,
  labels_revised INT64 NOT NULL,
  late_outcomes INT64 NOT NULL
)
PARTITION BY cohort_start
CLUSTER BY label
OPTIONS (partition_expiration_days = ${retention_days})
