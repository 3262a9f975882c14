-- Matured rows and defaults per cohort week from since to cohort_end for one label: the information each weekly
-- look of a group-sequential comparison had (its information fraction is cumulative defaults / required defaults).
-- Labels as known at as_of: each decision's latest label version written by then (as queries/weekly_cohort).
WITH known AS (
  SELECT prediction_id, event_timestamp, labeled_as_of, early_defaulted, early_matured_at, final_defaulted,
    final_matured_at
  FROM `${dataset}.labeled_predictions`
  WHERE event_timestamp >= @since
    AND event_timestamp < @cohort_end
    AND labeled_as_of <= @as_of
  QUALIFY ROW_NUMBER() OVER (PARTITION BY prediction_id ORDER BY labeled_as_of DESC) = 1
)
SELECT
  DATE_TRUNC(DATE(event_timestamp), WEEK(MONDAY)) AS cohort_start,
  COUNT(*) AS n,
  COUNTIF(IF(@label = 'early', early_defaulted, final_defaulted)) AS n_positive
FROM known
WHERE (@label = 'early' AND early_matured_at <= @as_of)
  OR (@label = 'final' AND final_defaulted IS NOT NULL AND final_matured_at <= @as_of)
GROUP BY cohort_start
ORDER BY cohort_start
