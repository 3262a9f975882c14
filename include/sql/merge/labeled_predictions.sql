-- Label the approved decisions of a join_ground_truth run (queries/ground_truth_labels, same parameters), as a new
-- **version** of each label: a row per (prediction_id, labeled_as_of). A decision's first row is inserted when its
-- early label matures; a later run adds a row only when a label's value or maturity changed (its final label
-- matured, or an outcome delivered late changed a label); a row is never changed by a run of another as_of, so the
-- labels known at any instant T are each decision's latest row with labeled_as_of <= T (queries/weekly_cohort).
-- Idempotent: a re-run of the same as_of writes the same row again. A run never turns a mature label back to NULL
-- (COALESCE with the latest earlier version), and a backfill of an older as_of adds the version of that instant
-- without touching later ones. The purchase-time range (late_from, early_to] bounds every read of the table, so
-- BigQuery prunes labeled_predictions too.
MERGE `${dataset}.labeled_predictions` AS t
USING (
  SELECT
    l.prediction_id, l.transaction_id, l.customer_id_hash, l.event_timestamp, l.served_at, l.served_by, l.decision,
    l.policy_name, l.policy_version, l.experiment_id, l.arm, l.propensity, l.scores, l.customer_type,
    l.merchant_category, l.channel, l.amount, l.amount_band,
    COALESCE(l.early_defaulted, p.early_defaulted) AS early_defaulted,
    COALESCE(l.early_matured_at, p.early_matured_at) AS early_matured_at,
    COALESCE(l.final_defaulted, p.final_defaulted) AS final_defaulted,
    COALESCE(l.final_matured_at, p.final_matured_at) AS final_matured_at,
    l.outcome_events,
    l.labeled_as_of,
    p.prediction_id IS NULL
      OR COALESCE(l.early_defaulted, p.early_defaulted) IS DISTINCT FROM p.early_defaulted
      OR COALESCE(l.early_matured_at, p.early_matured_at) IS DISTINCT FROM p.early_matured_at
      OR COALESCE(l.final_defaulted, p.final_defaulted) IS DISTINCT FROM p.final_defaulted
      OR COALESCE(l.final_matured_at, p.final_matured_at) IS DISTINCT FROM p.final_matured_at AS changed
  FROM (${queries_ground_truth_labels}) AS l
  LEFT JOIN (
    -- Each decision's latest version before this as_of.
    SELECT prediction_id, early_defaulted, early_matured_at, final_defaulted, final_matured_at
    FROM `${dataset}.labeled_predictions`
    WHERE event_timestamp > @late_from AND event_timestamp <= @early_to AND labeled_as_of < @as_of
    QUALIFY ROW_NUMBER() OVER (PARTITION BY prediction_id ORDER BY labeled_as_of DESC) = 1
  ) AS p
    ON p.prediction_id = l.prediction_id
  WHERE l.decision = 'approve'
    AND l.early_defaulted IS NOT NULL
    -- A decision of the late cohort only gets a new version of labels it has: the run labels no day it is not for.
    AND (l.in_early_cohort OR l.in_final_cohort OR p.prediction_id IS NOT NULL)
) AS s
ON t.prediction_id = s.prediction_id
  AND t.labeled_as_of = s.labeled_as_of
  AND t.event_timestamp > @late_from
  AND t.event_timestamp <= @early_to
WHEN MATCHED THEN UPDATE SET
  early_defaulted = s.early_defaulted,
  early_matured_at = s.early_matured_at,
  final_defaulted = s.final_defaulted,
  final_matured_at = s.final_matured_at,
  outcome_events = s.outcome_events
WHEN NOT MATCHED AND s.changed THEN INSERT (
  prediction_id, transaction_id, customer_id_hash, event_timestamp, served_at, served_by, decision, policy_name,
  policy_version, experiment_id, arm, propensity, scores, customer_type, merchant_category, channel, amount,
  amount_band, early_defaulted, early_matured_at, final_defaulted, final_matured_at, outcome_events, labeled_as_of
) VALUES (
  s.prediction_id, s.transaction_id, s.customer_id_hash, s.event_timestamp, s.served_at, s.served_by, s.decision,
  s.policy_name, s.policy_version, s.experiment_id, s.arm, s.propensity, s.scores, s.customer_type,
  s.merchant_category, s.channel, s.amount, s.amount_band, s.early_defaulted, s.early_matured_at, s.final_defaulted,
  s.final_matured_at, s.outcome_events, s.labeled_as_of
)
