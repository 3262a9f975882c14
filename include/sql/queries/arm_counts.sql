-- Decisions per experiment and served arm in one cohort week, every decision (not only the matured): what the
-- sample-ratio check of a canary compares with the experiment's shares.
SELECT experiment_id, arm, COUNT(*) AS decisions
FROM `${dataset}.prediction_logs`
WHERE event_timestamp >= @cohort_start
  AND event_timestamp < @cohort_end
  AND experiment_id IS NOT NULL
GROUP BY experiment_id, arm
ORDER BY experiment_id, arm
