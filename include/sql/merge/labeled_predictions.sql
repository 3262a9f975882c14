-- Label the approved decisions of a join_ground_truth run (queries/ground_truth_labels, same parameters): insert a
-- decision when its early label matures, fill its final label when that matures. Idempotent: a re-run of the same
-- as_of writes the same values. A run never turns a mature label back to NULL (COALESCE: the new value when this run
-- computed one, else the stored one), and an older as_of (a backfill after later runs) leaves a row labelled as of a
-- later instant alone. The purchase-time ranges bound the target, so BigQuery prunes labeled_predictions too.
MERGE `${dataset}.labeled_predictions` AS t
USING (
  SELECT * FROM (${queries_ground_truth_labels}) AS l WHERE l.decision = 'approve'
) AS s
ON t.prediction_id = s.prediction_id
  AND (
    (t.event_timestamp > @early_from AND t.event_timestamp <= @early_to)
    OR (t.event_timestamp > @final_from AND t.event_timestamp <= @final_to)
  )
WHEN MATCHED AND s.labeled_as_of >= t.labeled_as_of THEN UPDATE SET
  early_defaulted = COALESCE(s.early_defaulted, t.early_defaulted),
  early_matured_at = COALESCE(s.early_matured_at, t.early_matured_at),
  final_defaulted = COALESCE(s.final_defaulted, t.final_defaulted),
  final_matured_at = COALESCE(s.final_matured_at, t.final_matured_at),
  outcome_events = s.outcome_events,
  labeled_as_of = s.labeled_as_of
WHEN NOT MATCHED THEN INSERT (
  prediction_id, transaction_id, customer_id_hash, event_timestamp, served_at, served_by, decision, policy_name,
  policy_version, experiment_id, arm, propensity, scores, customer_type, merchant_category, channel, amount,
  amount_band, early_defaulted, early_matured_at, final_defaulted, final_matured_at, outcome_events, labeled_as_of
) VALUES (
  s.prediction_id, s.transaction_id, s.customer_id_hash, s.event_timestamp, s.served_at, s.served_by, s.decision,
  s.policy_name, s.policy_version, s.experiment_id, s.arm, s.propensity, s.scores, s.customer_type,
  s.merchant_category, s.channel, s.amount, s.amount_band, s.early_defaulted, s.early_matured_at, s.final_defaulted,
  s.final_matured_at, s.outcome_events, s.labeled_as_of
)
