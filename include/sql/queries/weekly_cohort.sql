-- The matured, labelled decisions of one cohort week for weekly_performance: one row per decision with the label
-- asked for (label: 'early' or 'final') and every model's score (the nested array as logged; Python pivots it).
-- Labels as known at as_of (the run's instant): each decision's latest label version written by then
-- (labeled_as_of <= as_of; a later relabel adds a version and never changes this one), matured by then. A backfill
-- or a re-run as of T returns exactly what was known at T, whatever later runs stored.
-- cohort_start / cohort_end are constants, so BigQuery reads only that week's partitions.
-- Narrow first: the version and the retried-purchase picks are window functions over a few key columns, then the
-- wide rows (the nested scores) are read once by a join on the chosen (prediction_id, labeled_as_of): the windows over
-- whole rows took 1.5× as long at 3M rows a week.
WITH versions AS (
  SELECT prediction_id, transaction_id, served_at, labeled_as_of, early_matured_at, final_defaulted, final_matured_at
  FROM `${dataset}.labeled_predictions`
  WHERE event_timestamp >= @cohort_start
    AND event_timestamp < @cohort_end
    AND labeled_as_of <= @as_of
  QUALIFY ROW_NUMBER() OVER (PARTITION BY prediction_id ORDER BY labeled_as_of DESC) = 1
),
chosen AS (
  SELECT prediction_id, labeled_as_of
  FROM versions
  WHERE (@label = 'early' AND early_matured_at <= @as_of)
    OR (@label = 'final' AND final_defaulted IS NOT NULL AND final_matured_at <= @as_of)
  -- A purchase decided twice (a client retried a request whose answer it lost) counts once: its first decision.
  QUALIFY ROW_NUMBER() OVER (PARTITION BY transaction_id ORDER BY served_at, prediction_id) = 1
)
SELECT
  l.prediction_id,
  l.transaction_id,
  l.customer_id_hash,
  l.event_timestamp,
  l.experiment_id,
  l.arm,
  l.policy_name,
  l.customer_type,
  l.merchant_category,
  l.channel,
  l.amount,
  l.amount_band,
  IF(@label = 'early', l.early_defaulted, l.final_defaulted) AS defaulted,
  l.scores
FROM `${dataset}.labeled_predictions` AS l
JOIN chosen AS c
  ON l.prediction_id = c.prediction_id AND l.labeled_as_of = c.labeled_as_of
WHERE l.event_timestamp >= @cohort_start
  AND l.event_timestamp < @cohort_end
ORDER BY l.prediction_id
