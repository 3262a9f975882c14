-- The p99 scoring latency of the model that served each decision of one canary arm over [since, until), for one
-- allocation period (a served score: its alias and version are the decision's served_by, alias-at-v-version).
SELECT
  a.arm,
  COUNT(*) AS scored,
  APPROX_QUANTILES(s.latency_us, 100)[OFFSET(99)] AS p99_us
FROM `${dataset}.prediction_logs` AS p, UNNEST(p.assignments) AS a, UNNEST(p.scores) AS s
WHERE p.served_at >= @since
  AND p.served_at < @until
  AND a.experiment_id = @experiment_id
  AND a.mode = 'canary'
  AND a.experiment_version = @experiment_version
  AND CONCAT(s.alias, '@v', s.model_version) = p.served_by
  AND s.status = 'ok'
  AND s.latency_us IS NOT NULL
GROUP BY a.arm
ORDER BY a.arm
