-- Insert the staged quarantined entries not yet in the table (idempotent on stream + entry id).
-- The staged batch holds each key once (check_batch refuses it otherwise; the uploader keeps the first).
MERGE `${dataset}.quarantine` AS t
USING ${source} AS s
ON t.quarantine_id = s.quarantine_id
WHEN NOT MATCHED THEN INSERT (${columns}) VALUES (${source_columns})
