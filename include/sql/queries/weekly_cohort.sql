-- The matured, labelled decisions of one cohort week for weekly_performance: one row per decision with the label
-- asked for (@label: 'early' or 'final') and every model's score (the nested array as logged; Python pivots it).
-- Only labels matured by @as_of (the run's instant): a backfill for an early date sees what was known then.
-- @cohort_start / @cohort_end are constants, so BigQuery reads only that week's partitions.
SELECT
  prediction_id,
  transaction_id,
  customer_id_hash,
  event_timestamp,
  experiment_id,
  arm,
  policy_name,
  customer_type,
  merchant_category,
  channel,
  amount,
  amount_band,
  IF(@label = 'early', early_defaulted, final_defaulted) AS defaulted,
  scores
FROM `${dataset}.labeled_predictions`
WHERE event_timestamp >= @cohort_start
  AND event_timestamp < @cohort_end
  AND (
    (@label = 'early' AND early_matured_at <= @as_of)
    OR (@label = 'final' AND final_defaulted IS NOT NULL AND final_matured_at <= @as_of)
  )
-- A purchase decided twice (a client retried a request whose answer it lost) counts once: its first decision.
QUALIFY ROW_NUMBER() OVER (PARTITION BY transaction_id ORDER BY served_at, prediction_id) = 1
ORDER BY prediction_id
