-- The alert conditions that still hold (no resolving run yet) of some kinds about some subjects: e.g. the drift
-- and unseen-category alerts on a challenger's inputs, which block its promotion.
SELECT kind, subject, condition, title, first_raised_at, last_seen_at
FROM `${dataset}.alerts`
WHERE resolved_at IS NULL
  AND kind IN UNNEST(@kinds)
  AND subject IN UNNEST(@subjects)
ORDER BY kind, subject, condition
