-- Insert the staged quarantined entries not yet in the table (idempotent on stream + entry id).
MERGE `${dataset}.quarantine` AS t
USING (
  SELECT * FROM ${source}
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (PARTITION BY quarantine_id ORDER BY quarantined_at) = 1
) AS s
ON t.quarantine_id = s.quarantine_id
WHEN NOT MATCHED THEN INSERT (${columns}) VALUES (${source_columns})
