-- What a join_ground_truth run found, as of as_of (parameters of queries/ground_truth_labels, plus window_start:
-- the run's window is (window_start, as_of]). Counted from the same point-in-time labels the MERGE writes, so a
-- backfill reports what was known then, whatever later runs stored.
-- * decisions of the run's cohorts by decision: approved (labelled), denied (no credit, so no outcome is expected;
--   denied_with_outcome > 0 means outcomes are joined to the wrong decisions), manual review (not labelled);
-- * early / final matured approved decisions and their defaults;
-- * approved decisions with no outcome known by as_of, outcomes known in the window: the outcome-feed checks;
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
),
window_outcomes AS (
  SELECT COUNT(*) AS outcomes_in_window
  FROM `${dataset}.outcomes`
  WHERE event_timestamp > @window_start AND event_timestamp <= @as_of
),
pending AS (
  SELECT COUNT(*) AS pending_final
  FROM `${dataset}.prediction_logs`
  WHERE decision = 'approve'
    AND event_timestamp > @final_to
    AND event_timestamp <= @as_of
)
SELECT counts.*, window_outcomes.outcomes_in_window, pending.pending_final
FROM counts CROSS JOIN window_outcomes CROSS JOIN pending
