-- Insert the staged predictions not yet in the table (a re-sent batch changes nothing). The event_timestamp range
-- lets BigQuery prune the target's partitions; a prediction's event_timestamp never changes, so no duplicate
-- escapes it.
-- The staged batch holds each prediction_id once (check_batch refuses it otherwise; the uploader keeps the first).
MERGE `${dataset}.prediction_logs` AS t
USING ${source} AS s
ON t.prediction_id = s.prediction_id AND t.event_timestamp BETWEEN @min_ts AND @max_ts
WHEN NOT MATCHED THEN INSERT (${columns}) VALUES (${source_columns})
