-- Insert the staged outcomes not yet in the table (idempotent on outcome_id).
-- The staged batch holds each key once (check_batch refuses it otherwise; the uploader keeps the first).
MERGE `${dataset}.outcomes` AS t
USING ${source} AS s
ON t.outcome_id = s.outcome_id AND t.event_timestamp BETWEEN @min_ts AND @max_ts
WHEN NOT MATCHED THEN INSERT (${columns}) VALUES (${source_columns})
