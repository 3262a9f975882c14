-- A model version's own figures on its first evaluated cohort weeks (at most weeks of them, all before
-- before_date) for one label and population: the baseline its weekly AUC and calibration are compared with (the
-- AUC-drop and default-rise alerts of weekly_performance). The per-model rows are written once per experiment that
-- compares the model, all with the same value: one per (week, metric) is read.
SELECT cohort_start, metric, MIN(value) AS value, MIN(n) AS n, MIN(n_positive) AS n_positive
FROM `${dataset}.model_metrics`
WHERE model = @model
  AND label = @label
  AND population = @population
  AND segment = 'all'
  AND segment_value = 'all'
  AND metric IN ('auc', 'auc_se', 'mean_score')
  AND cohort_start < @before_date
GROUP BY cohort_start, metric
QUALIFY DENSE_RANK() OVER (ORDER BY cohort_start) <= @weeks
ORDER BY cohort_start, metric
