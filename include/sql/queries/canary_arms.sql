-- One canary experiment's arms over a window of serving time [since, until), per allocation period (the
-- experiment's config version: every share change is a new one) and arm: what the canary guard judges. Decisions
-- and customers (the randomisation unit), approvals, the decisions no model score served (the fallback decided),
-- when the period's first and last decisions of the window were served, and the treatment share of the period.
SELECT
  a.experiment_version,
  ROUND(IF(a.arm = 'treatment', a.propensity, 1 - a.propensity), 6) AS treatment_share,
  a.arm,
  COUNT(*) AS decisions,
  COUNT(DISTINCT p.customer_id_hash) AS customers,
  -- Cast: DuckDB's COUNT_IF is a 128-bit integer (a Decimal in Arrow).
  CAST(COUNTIF(p.decision = 'approve') AS INT64) AS approved,
  CAST(COUNTIF(p.served_by = 'fallback') AS INT64) AS fallbacks,
  MIN(p.served_at) AS first_served_at,
  MAX(p.served_at) AS last_served_at
FROM `${dataset}.prediction_logs` AS p, UNNEST(p.assignments) AS a
WHERE p.served_at >= @since
  AND p.served_at < @until
  AND a.experiment_id = @experiment_id
  AND a.mode = 'canary'
GROUP BY a.experiment_version, treatment_share, a.arm
ORDER BY a.experiment_version, a.arm
