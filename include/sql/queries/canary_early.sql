-- The early labels of one canary experiment's approved decisions, per serving arm, as known at as_of: each
-- decision's latest label version by then whose early label has matured (instalment 2 late or missed, or a default,
-- by day 17). The canary guard compares the arms' early default rates once enough exist.
WITH known AS (
  SELECT prediction_id, arm, early_defaulted, early_matured_at
  FROM `${dataset}.labeled_predictions`
  WHERE experiment_id = @experiment_id
    AND event_timestamp >= @since
    AND labeled_as_of <= @as_of
  QUALIFY ROW_NUMBER() OVER (PARTITION BY prediction_id ORDER BY labeled_as_of DESC) = 1
)
SELECT arm, COUNT(*) AS labels, CAST(COUNTIF(early_defaulted) AS INT64) AS defaults
FROM known
WHERE early_matured_at <= @as_of AND arm IS NOT NULL
GROUP BY arm
ORDER BY arm
