-- The served scores of one canary experiment's arms over [since, until), for one allocation period: counts in 20
-- equal bins on [0, 1] per arm (the canary guard's score-distribution signal); a served score is the one whose alias
-- and version are the decision's served_by (alias-at-v-version).
SELECT
  a.arm,
  CAST(FLOOR(LEAST(GREATEST(s.score, 0), 0.999999) * 20) AS INT64) AS bin,
  COUNT(*) AS n
FROM `${dataset}.prediction_logs` AS p, UNNEST(p.assignments) AS a, UNNEST(p.scores) AS s
WHERE p.served_at >= @since
  AND p.served_at < @until
  AND a.experiment_id = @experiment_id
  AND a.mode = 'canary'
  AND a.experiment_version = @experiment_version
  AND CONCAT(s.alias, '@v', s.model_version) = p.served_by
  AND s.status = 'ok'
  AND s.score IS NOT NULL
GROUP BY a.arm, bin
ORDER BY a.arm, bin
