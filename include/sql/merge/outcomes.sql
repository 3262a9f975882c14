-- Insert the staged outcomes not yet in the table (idempotent on outcome_id).
MERGE `${dataset}.outcomes` AS t
USING (
  SELECT * FROM ${source}
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (PARTITION BY outcome_id ORDER BY stream_entry_id) = 1
) AS s
ON t.outcome_id = s.outcome_id AND t.event_timestamp BETWEEN @min_ts AND @max_ts
WHEN NOT MATCHED THEN INSERT (${columns}) VALUES (${source_columns})
