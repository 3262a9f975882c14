-- The figures of one cohort week and label (parameters cohort_start and label), as a weekly_performance run computed
-- them, replace that slice: a figure computed again is updated on its metric_id, a new one inserted, and one the run
-- no longer produces (a model now skipped, a segment value gone, a comparison that no longer exists) deleted. A
-- re-run, a backfill or a re-evaluation after late outcomes thus leaves exactly the figures it computed; other weeks
-- and labels are untouched. One statement: atomic in BigQuery and, in DuckDB, run in one transaction.
-- (No parameter names in these comments: the BigQuery emulator counts them in the text.)
MERGE `${dataset}.model_metrics` AS t
USING ${source} AS s
ON t.metric_id = s.metric_id
WHEN MATCHED THEN UPDATE SET
  value = s.value, n = s.n, n_positive = s.n_positive, population = s.population, as_of = s.as_of,
  mlflow_run_id = s.mlflow_run_id
WHEN NOT MATCHED BY TARGET THEN INSERT (${columns}) VALUES (${source_columns})
WHEN NOT MATCHED BY SOURCE AND t.cohort_start = @cohort_start AND t.label = @label THEN DELETE
