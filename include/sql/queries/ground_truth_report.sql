-- What a join_ground_truth run found, as of as_of (parameters of queries/ground_truth_labels, plus baseline_start:
-- the feed check's baseline is (baseline_start, window_start]). Counted from the same point-in-time labels the MERGE
-- writes, so a backfill reports what was known then, whatever later runs stored.
-- * decisions of the run's early and final cohorts by decision: approved (labelled), denied (no credit, so no
--   outcome is expected; denied_with_outcome > 0 means outcomes are joined to the wrong decisions), manual review
--   (not labelled and left out of the evaluation: manual_review_with_outcome counts those granted after review);
-- * early / final matured approved decisions and their defaults;
-- * approved decisions with no outcome known by as_of, outcomes that arrived in the window: the outcome-feed checks;
-- * signals of each type that arrived in the window and in the baseline: the per-type feed check (a dead default
--   stream while payments flow);
-- * late_early_outcomes / late_final_outcomes: deciding outcomes that arrived in the window for labels that had
--   matured before it (approved decisions of every cohort, the late one included);
-- * pending_final: approved decisions of the last maturity_days (purchased after final_to = as_of minus
--   maturity_days), whose final label has not matured.
WITH labels AS (
  ${queries_ground_truth_labels}
),
counts AS (
  SELECT
    COUNTIF(decision = 'approve') AS approved,
    COUNTIF(decision = 'deny') AS denied_no_outcome_expected,
    COUNTIF(decision = 'deny' AND outcome_events > 0) AS denied_with_outcome,
    COUNTIF(decision = 'manual_review') AS manual_review_unlabeled,
    COUNTIF(decision = 'manual_review' AND outcome_events > 0) AS manual_review_with_outcome,
    COUNTIF(decision = 'approve' AND in_early_cohort) AS early_matured,
    COUNTIF(decision = 'approve' AND in_early_cohort AND early_defaulted) AS early_defaults,
    COUNTIF(decision = 'approve' AND in_final_cohort) AS final_matured,
    COUNTIF(decision = 'approve' AND in_final_cohort AND final_defaulted) AS final_defaults,
    COUNTIF(decision = 'approve' AND outcome_events = 0) AS approved_without_outcome
  FROM labels
  WHERE in_early_cohort OR in_final_cohort
),
late AS (
  SELECT
    COALESCE(SUM(early_late_outcomes), 0) AS late_early_outcomes,
    COALESCE(SUM(final_late_outcomes), 0) AS late_final_outcomes
  FROM labels
  WHERE decision = 'approve'
),
arrivals AS (
  ${queries_outcome_arrivals}
),
window_outcomes AS (
  SELECT
    COUNTIF(arrived_at > @window_start) AS outcomes_in_window,
    COUNTIF(arrived_at > @window_start AND event_type = 'instalment_paid') AS window_instalment_paid,
    COUNTIF(arrived_at > @window_start AND event_type = 'instalment_late') AS window_instalment_late,
    COUNTIF(arrived_at > @window_start AND event_type = 'default') AS window_default,
    COUNTIF(arrived_at <= @window_start AND event_type = 'instalment_paid') AS baseline_instalment_paid,
    COUNTIF(arrived_at <= @window_start AND event_type = 'instalment_late') AS baseline_instalment_late,
    COUNTIF(arrived_at <= @window_start AND event_type = 'default') AS baseline_default
  FROM arrivals
  WHERE arrived_at > @baseline_start
),
pending AS (
  SELECT COUNT(*) AS pending_final
  FROM `${dataset}.prediction_logs`
  WHERE decision = 'approve'
    AND event_timestamp > @final_to
    AND event_timestamp <= @as_of
)
SELECT counts.*, late.*, window_outcomes.*, pending.pending_final
FROM counts CROSS JOIN late CROSS JOIN window_outcomes CROSS JOIN pending
