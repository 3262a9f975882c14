-- The matured, labelled decisions of one cohort week for weekly_performance: one row per decision with the label
-- asked for (@label: 'early' or 'final') and every model's score (the nested array as logged; Python pivots it).
-- Labels as known at @as_of (the run's instant): each decision's latest label version written by then
-- (labeled_as_of <= @as_of; a later relabel adds a version and never changes this one), matured by then. A backfill
-- or a re-run as of T returns exactly what was known at T, whatever later runs stored.
-- @cohort_start / @cohort_end are constants, so BigQuery reads only that week's partitions.
WITH known AS (
  SELECT *
  FROM `${dataset}.labeled_predictions`
  WHERE event_timestamp >= @cohort_start
    AND event_timestamp < @cohort_end
    AND labeled_as_of <= @as_of
  QUALIFY ROW_NUMBER() OVER (PARTITION BY prediction_id ORDER BY labeled_as_of DESC) = 1
)
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
FROM known
WHERE (@label = 'early' AND early_matured_at <= @as_of)
  OR (@label = 'final' AND final_defaulted IS NOT NULL AND final_matured_at <= @as_of)
-- A purchase decided twice (a client retried a request whose answer it lost) counts once: its first decision.
QUALIFY ROW_NUMBER() OVER (PARTITION BY transaction_id ORDER BY served_at, prediction_id) = 1
ORDER BY prediction_id
