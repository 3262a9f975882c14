-- The weekly figures of one comparison of two versions on the final label that the promotion gate pools, from the
-- first week of its plan: its looks and verdict, the Brier difference and its interval, the split check.
SELECT cohort_start, metric, value, n
FROM `${dataset}.model_metrics`
WHERE label = 'final'
  AND segment = 'all'
  AND cohort_start >= @since_date
  AND experiment_id = @experiment_id
  AND model = @comparison
ORDER BY cohort_start, metric
