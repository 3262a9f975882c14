-- Insert the staged deployment events not yet in the table (idempotent on the deterministic event_id).
-- evidence arrives as JSON text (Parquet has no JSON type) and is parsed into the JSON column here.
MERGE `${dataset}.deployment_events` AS t
USING ${source} AS s
ON t.event_id = s.event_id
WHEN NOT MATCHED THEN INSERT (event_id, occurred_at, action, model_name, alias, from_version, to_version, reason, actor, evidence)
VALUES (s.event_id, s.occurred_at, s.action, s.model_name, s.alias, s.from_version, s.to_version, s.reason, s.actor, PARSE_JSON(s.evidence))
