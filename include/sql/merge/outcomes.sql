-- Insert the staged outcomes not yet in the table, on outcome_id alone. No event_timestamp bound: a re-sent outcome
-- (its event-log marker expired) may carry another timestamp, months from the first, and must still match it.
-- The outcome id is derived from the transaction id (shadowgate.events.outcome_event_id), so requiring equal
-- transaction ids changes no match and lets BigQuery skip blocks by the table's clustering.
-- The staged batch holds each key once (check_batch refuses it otherwise; the uploader keeps the first).
MERGE `${dataset}.outcomes` AS t
USING ${source} AS s
ON t.outcome_id = s.outcome_id AND t.transaction_id = s.transaction_id
WHEN NOT MATCHED THEN INSERT (${columns}) VALUES (${source_columns})
