-- The columns of one day (parameter window_start) as a drift_check run computed them replace that day's rows: a
-- column checked again is updated on its report_id, a new one inserted, one no longer checked deleted. Other days
-- are untouched; a re-run or a backfill leaves exactly what it computed.
-- (No parameter names in these comments: the BigQuery emulator counts them in the text.)
MERGE `${dataset}.drift_reports` AS t
USING ${source} AS s
ON t.report_id = s.report_id
WHEN MATCHED THEN UPDATE SET
  window_end = s.window_end, model_version = s.model_version, column_name = s.column_name, method = s.method,
  statistic = s.statistic, threshold = s.threshold, drifted = s.drifted, n = s.n, unseen_share = s.unseen_share,
  mlflow_run_id = s.mlflow_run_id, computed_at = s.computed_at
WHEN NOT MATCHED BY TARGET THEN INSERT (${columns}) VALUES (${source_columns})
WHEN NOT MATCHED BY SOURCE AND t.window_start = @window_start THEN DELETE
