-- The (cohort week, label) pairs weekly_performance evaluated on labels that were revised later: a label revision
-- detected after the latest evaluation of the week (model_metrics.as_of) and by as_of. Weeks never evaluated are not
-- listed (their first evaluation uses the revised labels). Parameters: as_of; since (the oldest cohort week looked
-- at, so BigQuery prunes both tables).
WITH evaluated AS (
  SELECT cohort_start, label, MAX(as_of) AS evaluated_as_of
  FROM `${dataset}.model_metrics`
  WHERE cohort_start >= @since
  GROUP BY cohort_start, label
)
SELECT
  r.cohort_start,
  r.label,
  MAX(r.revision) AS revision,
  SUM(r.labels_revised) AS labels_revised,
  SUM(r.late_outcomes) AS late_outcomes,
  MAX(r.detected_at) AS detected_at,
  MAX(e.evaluated_as_of) AS evaluated_as_of
FROM `${dataset}.label_revisions` AS r
JOIN evaluated AS e ON e.cohort_start = r.cohort_start AND e.label = r.label
WHERE r.cohort_start >= @since
  AND r.detected_at <= @as_of
  AND r.detected_at > e.evaluated_as_of
GROUP BY r.cohort_start, r.label
ORDER BY r.cohort_start, r.label
