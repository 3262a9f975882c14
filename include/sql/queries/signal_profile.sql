-- The outcome feed's age profile for join_ground_truth's per-type feed check: approved purchases per purchase day,
-- and each signal type's arrivals per (purchase day, arrival day) since the baseline started. A signal type's
-- expected arrivals in a window follow from its arrival rate per purchase at each age (days since the purchase)
-- over the baseline, applied to the purchases of each age in the window: a book that grows, shrinks or stops
-- (a replayed quarter ends) changes the expectation, a dead stream does not.
WITH arrivals AS (
  ${queries_outcome_arrivals}
),
approved AS (
  SELECT transaction_id, DATE(MIN(event_timestamp)) AS purchase_day
  FROM `${dataset}.prediction_logs`
  WHERE decision = 'approve'
    AND event_timestamp > @profile_start
    AND event_timestamp <= @as_of
  GROUP BY transaction_id
)
SELECT 'purchases' AS kind, purchase_day, CAST(NULL AS DATE) AS arrival_day, COUNT(*) AS n
FROM approved
GROUP BY purchase_day
UNION ALL
SELECT a.event_type AS kind, p.purchase_day, DATE(a.arrived_at) AS arrival_day, COUNT(*) AS n
FROM arrivals AS a
JOIN approved AS p ON p.transaction_id = a.transaction_id
WHERE a.arrived_at > @baseline_start
GROUP BY a.event_type, p.purchase_day, DATE(a.arrived_at)
