-- Write the alert conditions a run changed (record_alerts computed each row's next state from the one it read):
-- the row of a known condition is replaced, a new condition inserted. details arrives as JSON text (Parquet has no
-- JSON type) and is parsed into the JSON column here.
MERGE `${dataset}.alerts` AS t
USING ${source} AS s
ON t.alert_key = s.alert_key
WHEN MATCHED THEN UPDATE SET
  severity = s.severity, source = s.source, title = s.title, text = s.text, first_raised_at = s.first_raised_at,
  last_seen_at = s.last_seen_at, resolved_at = s.resolved_at, times_seen = s.times_seen,
  times_raised = s.times_raised, notified_at = s.notified_at, details = PARSE_JSON(s.details)
WHEN NOT MATCHED THEN INSERT (alert_key, kind, subject, condition, severity, source, title, text, first_raised_at, last_seen_at, resolved_at, times_seen, times_raised, notified_at, details)
VALUES (s.alert_key, s.kind, s.subject, s.condition, s.severity, s.source, s.title, s.text, s.first_raised_at, s.last_seen_at, s.resolved_at, s.times_seen, s.times_raised, s.notified_at, PARSE_JSON(s.details))
