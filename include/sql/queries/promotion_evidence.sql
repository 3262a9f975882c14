-- The weekly figures the promotion gate pools for one comparison of two versions on the final label, from the first
-- week of its plan: the comparison's own rows (its looks and verdict, the Brier difference, the split check) and
-- each of the two models' rows on the same matured requests (approvals and realised loss at each policy's cut-offs).
SELECT cohort_start, model, metric, value, n
FROM `${dataset}.model_metrics`
WHERE label = 'final'
  AND segment = 'all'
  AND cohort_start >= @since_date
  AND (
    (experiment_id = @experiment_id AND model = @comparison)
    OR (experiment_id = '*' AND model IN UNNEST(@models))
  )
ORDER BY cohort_start, model, metric
