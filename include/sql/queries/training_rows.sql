-- The training rows of retrain_challenger: the approved decisions of purchases in [window_start, window_end) whose
-- final label is known at as_of (each decision's latest label version written by then), with the features exactly as
-- they were logged when the decision was served (the prediction_logs row: never recomputed), the contract inputs
-- (for the new reference sample) and every model's logged score (the champion's, for the replay comparison).
-- A purchase decided twice (a client retried) counts once, its first decision, as in weekly_cohort.
WITH versions AS (
  SELECT prediction_id, transaction_id, served_at, labeled_as_of, final_defaulted, final_matured_at
  FROM `${dataset}.labeled_predictions`
  WHERE event_timestamp >= @window_start
    AND event_timestamp < @window_end
    AND labeled_as_of <= @as_of
  QUALIFY ROW_NUMBER() OVER (PARTITION BY prediction_id ORDER BY labeled_as_of DESC) = 1
),
chosen AS (
  SELECT prediction_id, final_defaulted
  FROM versions
  WHERE final_defaulted IS NOT NULL AND final_matured_at <= @as_of
  QUALIFY ROW_NUMBER() OVER (PARTITION BY transaction_id ORDER BY served_at, prediction_id) = 1
)
SELECT
  p.prediction_id,
  p.event_timestamp,
  c.final_defaulted AS defaulted,
  p.feature_set,
  p.features,
  ${columns},
  p.scores
FROM `${dataset}.prediction_logs` AS p
JOIN chosen AS c
  ON p.prediction_id = c.prediction_id
WHERE p.event_timestamp >= @window_start
  AND p.event_timestamp < @window_end
ORDER BY p.event_timestamp, p.prediction_id
