-- The labels of every decision whose early or final maturity instant falls in a join_ground_truth run's window
-- (window_start, as_of], and of every decision a deciding outcome was delivered late for in that window: point in
-- time as of as_of (the run's data interval end). Used by merge/labeled_predictions (approved rows) and
-- queries/ground_truth_report (every decision, for the counts).
--
-- Parameters (named without their @ in comments: the BigQuery emulator counts those too): as_of, window_start; the
-- cohorts' purchase-time ranges (early_from, early_to] = the window minus the early delay and (final_from, final_to]
-- = the window minus maturity_days (constants, so BigQuery prunes prediction_logs and outcomes to those partitions);
-- late_from (purchases after it are looked at for late deliveries); early_maturity_hours (early_maturity_days × 24
-- plus the grace hours), maturity_days; new_customer_days (the decision policies' new-customer cut-off).
--
-- Rules (time is the purchase's event_timestamp and the outcomes' own instants, never the wall clock):
-- * an outcome counts only once it has arrived (queries/outcome_arrivals: arrived_at <= as_of) and once it is known
--   (event_timestamp <= as_of): a backfill as of a past day never sees an outcome delivered after it.
-- * early: instalment 2 (the first after checkout) late or missed, or a default, known by
--   event_timestamp + early_maturity_hours (day 17 plus the grace window); computed once that instant is <= as_of.
-- * final: a default known by event_timestamp + maturity_days; NULL until that instant is <= as_of.
-- * only outcomes dated between the purchase and the label's horizon decide it; one delivered after the label
--   matured still does (a later version of the label: merge/labeled_predictions keeps every version).
-- * late cohort: decisions whose early label matured by window_start and for which a deciding outcome arrived in the
--   window; early_late_outcomes / final_late_outcomes count, per decision, the deciding outcomes that arrived in the
--   window after that label had matured (by window_start).
-- * only approved decisions are labelled: a denied applicant never got the credit; a manual review's final answer
--   is not in the log (its outcomes, if any, are counted and the decision is left out of the evaluation).
-- * outcome_events: the transaction's outcomes known by as_of (0 = nothing known: a broken feed if frequent).
WITH arrived AS (
  ${queries_outcome_arrivals}
),
deciding AS (
  -- Every arrived outcome, with the labels it can decide.
  SELECT
    transaction_id,
    event_timestamp,
    arrived_at,
    event_type = 'default' OR (event_type = 'instalment_late' AND instalment_number = 2) AS decides_early,
    event_type = 'default' AS decides_final
  FROM arrived
),
delivered_late AS (
  SELECT DISTINCT transaction_id
  FROM deciding
  WHERE arrived_at > @window_start AND decides_early
),
cohort AS (
  SELECT
    p.prediction_id,
    p.transaction_id,
    p.customer_id_hash,
    p.event_timestamp,
    p.served_at,
    p.served_by,
    p.decision,
    p.policy_name,
    p.policy_version,
    p.experiment_id,
    p.arm,
    p.propensity,
    p.scores,
    IF(p.customer_tenure_days < @new_customer_days, 'new', 'returning') AS customer_type,
    p.merchant_category,
    p.channel,
    p.amount,
    CASE
      WHEN p.amount < 100 THEN '0-100'
      WHEN p.amount < 500 THEN '100-500'
      WHEN p.amount < 1000 THEN '500-1000'
      ELSE '1000+'
    END AS amount_band,
    TIMESTAMP_ADD(p.event_timestamp, INTERVAL @early_maturity_hours HOUR) AS early_at,
    TIMESTAMP_ADD(p.event_timestamp, INTERVAL @maturity_days DAY) AS final_at,
    p.event_timestamp > @early_from AND p.event_timestamp <= @early_to AS in_early_cohort,
    p.event_timestamp > @final_from AND p.event_timestamp <= @final_to AS in_final_cohort
  FROM `${dataset}.prediction_logs` AS p
  WHERE (p.event_timestamp > @early_from AND p.event_timestamp <= @early_to)
    OR (p.event_timestamp > @final_from AND p.event_timestamp <= @final_to)
    OR (
      p.event_timestamp > @late_from
      AND p.event_timestamp <= @early_from
      AND p.transaction_id IN (SELECT transaction_id FROM delivered_late)
    )
  -- A purchase decided twice (a client retried a request whose answer it lost) is one credit: its first decision.
  QUALIFY ROW_NUMBER() OVER (PARTITION BY p.transaction_id ORDER BY p.served_at, p.prediction_id) = 1
),
signals AS (
  SELECT
    c.prediction_id,
    COUNT(o.transaction_id) AS outcome_events,
    LOGICAL_OR(o.event_timestamp <= c.early_at AND o.decides_early) AS early_bad,
    LOGICAL_OR(o.event_timestamp <= c.final_at AND o.decides_final) AS final_bad,
    COUNTIF(
      o.event_timestamp <= c.early_at AND o.decides_early AND c.early_at <= @window_start
      AND o.arrived_at > @window_start
    ) AS early_late_outcomes,
    COUNTIF(
      o.event_timestamp <= c.final_at AND o.decides_final AND c.final_at <= @window_start
      AND o.arrived_at > @window_start
    ) AS final_late_outcomes
  FROM cohort AS c
  LEFT JOIN deciding AS o
    ON o.transaction_id = c.transaction_id AND o.event_timestamp >= c.event_timestamp
  GROUP BY c.prediction_id
)
SELECT
  c.prediction_id,
  c.transaction_id,
  c.customer_id_hash,
  c.event_timestamp,
  c.served_at,
  c.served_by,
  c.decision,
  c.policy_name,
  c.policy_version,
  c.experiment_id,
  c.arm,
  c.propensity,
  c.scores,
  c.customer_type,
  c.merchant_category,
  c.channel,
  c.amount,
  c.amount_band,
  IF(c.decision = 'approve' AND c.early_at <= @as_of, COALESCE(s.early_bad, FALSE), NULL) AS early_defaulted,
  IF(c.decision = 'approve' AND c.early_at <= @as_of, c.early_at, NULL) AS early_matured_at,
  IF(c.decision = 'approve' AND c.final_at <= @as_of, COALESCE(s.final_bad, FALSE), NULL) AS final_defaulted,
  IF(c.decision = 'approve' AND c.final_at <= @as_of, c.final_at, NULL) AS final_matured_at,
  s.outcome_events,
  @as_of AS labeled_as_of,
  c.in_early_cohort,
  c.in_final_cohort,
  s.early_late_outcomes,
  s.final_late_outcomes
FROM cohort AS c
JOIN signals AS s ON s.prediction_id = c.prediction_id
