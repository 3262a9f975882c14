-- The recorded state of the alert conditions a run evaluated (keys), to decide which to send, count or resolve.
SELECT
  alert_key, kind, subject, condition, severity, source, title, text, first_raised_at, last_seen_at, resolved_at,
  times_seen, times_raised, notified_at, TO_JSON_STRING(details) AS details
FROM `${dataset}.alerts`
WHERE alert_key IN UNNEST(@keys)
