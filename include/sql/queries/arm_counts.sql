-- One canary experiment's arms in one cohort week, per allocation period and customer (the randomisation unit):
-- what the sample-ratio check and the per-applicant comparison of the arms need.
-- * every decision of the week, not only the approved or matured ones: the arm is the one the customer was assigned
--   in this experiment (its entry in the decision's assignments: intent to treat, whichever model served);
-- * the allocation period is the experiment's config version (every share change makes a new version), with the
--   treatment share the assignment was made under (the propensity of the arm, or one minus it);
-- * applicants / approved: the customer's decisions in the period (a purchase decided twice counts once, by its
--   first decision); labelled / defaults / loss: those of the approved ones whose label has matured by the run's
--   instant, with the label asked for (the weekly cohort's rows), loss being the amount of a defaulted purchase.
WITH decided AS (
  SELECT
    p.transaction_id,
    p.customer_id_hash,
    p.decision,
    a.experiment_version,
    ROUND(IF(a.arm = 'treatment', a.propensity, 1 - a.propensity), 6) AS treatment_share,
    a.arm
  FROM `${dataset}.prediction_logs` AS p, UNNEST(p.assignments) AS a
  WHERE p.event_timestamp >= @cohort_start
    AND p.event_timestamp < @cohort_end
    AND a.experiment_id = @experiment_id
    AND a.mode = 'canary'
  QUALIFY ROW_NUMBER() OVER (PARTITION BY p.transaction_id ORDER BY p.served_at, p.prediction_id) = 1
),
labelled AS (${queries_weekly_cohort})
SELECT
  d.experiment_version,
  d.treatment_share,
  d.arm,
  d.customer_id_hash,
  COUNT(*) AS applicants,
  -- Cast: DuckDB's COUNT_IF is a 128-bit integer (a Decimal in Arrow); COALESCE: it is NULL over no labelled row.
  CAST(COUNTIF(d.decision = 'approve') AS INT64) AS approved,
  COUNT(l.transaction_id) AS labelled,
  CAST(COUNTIF(COALESCE(l.defaulted, FALSE)) AS INT64) AS defaults,
  SUM(IF(l.defaulted, l.amount, 0)) AS loss
FROM decided AS d
LEFT JOIN labelled AS l ON l.transaction_id = d.transaction_id
GROUP BY d.experiment_version, d.treatment_share, d.arm, d.customer_id_hash
ORDER BY d.experiment_version, d.arm, d.customer_id_hash
