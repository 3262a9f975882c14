-- The served inputs and every model's score of one day's decisions (purchase time in [day_start, day_end)), for
-- drift_check. A purchase decided twice (a client retried) counts once, its first decision, as in weekly_cohort.
-- The input columns are the feature contract's drift columns (filled in by the caller).
SELECT ${columns}, decision, scores
FROM `${dataset}.prediction_logs`
WHERE event_timestamp >= @day_start
  AND event_timestamp < @day_end
QUALIFY ROW_NUMBER() OVER (PARTITION BY transaction_id ORDER BY served_at, prediction_id) = 1
