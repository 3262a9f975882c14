-- The weekly AUC differences (treatment - control) and their DeLong standard errors that weekly_performance recorded
-- for one comparison of two versions (its name, two alias-at-version names) of one experiment in the cohort weeks
-- [since_date, before_date): the independent increments the group-sequential statistic of a later look combines
-- (weighted by inverse variance).
SELECT cohort_start, metric, value
FROM `${dataset}.model_metrics`
WHERE experiment_id = @experiment_id
  AND label = @label
  AND segment = 'all'
  AND metric IN ('auc_difference', 'auc_difference_se')
  AND model = @comparison
  AND cohort_start >= @since_date
  AND cohort_start < @before_date
ORDER BY cohort_start, metric
