-- Every decision of one cohort week by outcome (approve, manual_review, deny), not only the approved ones that get a
-- label: the selection every weekly figure is computed under (the approval rate and the denied count shown next to
-- it). A purchase decided twice (a client retried) counts once, its first decision, as in queries/weekly_cohort.
SELECT decision, COUNT(*) AS decisions
FROM (
  SELECT decision
  FROM `${dataset}.prediction_logs`
  WHERE event_timestamp >= @cohort_start
    AND event_timestamp < @cohort_end
  QUALIFY ROW_NUMBER() OVER (PARTITION BY transaction_id ORDER BY served_at, prediction_id) = 1
)
GROUP BY decision
ORDER BY decision
