-- The label revisions a join_ground_truth run recorded (detected_at = as_of), for its summary.
SELECT cohort_start, cohort_end, label, revision, detected_at, labels_revised, late_outcomes
FROM `${dataset}.label_revisions`
WHERE detected_at = @as_of
  AND cohort_start >= @since
ORDER BY cohort_start, label
