-- Record a comparison's plan unless one is recorded already: the first run to record it fixes it; a re-run, a
-- backfill or a later change of the settings never moves it.
MERGE `${dataset}.comparison_plans` AS t
USING ${source} AS s
ON t.plan_id = s.plan_id
WHEN NOT MATCHED THEN INSERT (${columns}) VALUES (${source_columns})
