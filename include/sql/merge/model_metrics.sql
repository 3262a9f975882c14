-- Upsert a weekly_performance run's figures on metric_id: a re-run of a cohort week replaces its figures (the same
-- numbers when nothing changed; the new ones after late outcomes), never adds a second row.
MERGE `${dataset}.model_metrics` AS t
USING ${source} AS s
ON t.metric_id = s.metric_id
WHEN MATCHED THEN UPDATE SET
  value = s.value, n = s.n, n_positive = s.n_positive, population = s.population, as_of = s.as_of,
  mlflow_run_id = s.mlflow_run_id
WHEN NOT MATCHED THEN INSERT (${columns}) VALUES (${source_columns})
