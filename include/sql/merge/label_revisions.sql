-- Record the label revisions of the cohort weeks a join_ground_truth run reads (purchases in (late_from, early_to]:
-- parameters of queries/ground_truth_labels), from the label versions in labeled_predictions: a version that changed
-- a label an earlier version had already given (early_defaulted, or a non-NULL final_defaulted) revises that label
-- of its cohort week, detected at its labeled_as_of. Every revision of those weeks is (re)computed and numbered in
-- detected_at order, so a re-run writes the same rows and a backfill that adds an earlier revision renumbers the
-- later ones. late_outcomes: the deciding outcomes of the revised decisions that arrived after the previous version.
MERGE `${dataset}.label_revisions` AS t
USING (
  SELECT
    r.cohort_start,
    DATE_ADD(r.cohort_start, INTERVAL 7 DAY) AS cohort_end,
    r.label,
    ROW_NUMBER() OVER (PARTITION BY r.cohort_start, r.label ORDER BY r.detected_at) AS revision,
    r.detected_at,
    r.labels_revised,
    r.late_outcomes
  FROM (
    SELECT
      v.cohort_start,
      v.label,
      v.labeled_as_of AS detected_at,
      COUNT(DISTINCT v.prediction_id) AS labels_revised,
      COUNT(o.transaction_id) AS late_outcomes
    FROM (
      SELECT
        DATE_TRUNC(DATE(x.event_timestamp), WEEK(MONDAY)) AS cohort_start,
        x.prediction_id,
        x.transaction_id,
        x.event_timestamp,
        x.labeled_as_of,
        x.previous_as_of,
        label,
        IF(label = 'early', x.early_matured_at, x.final_matured_at) AS horizon
      FROM (
        SELECT
          *,
          LAG(early_defaulted) OVER versions AS previous_early,
          LAG(final_defaulted) OVER versions AS previous_final,
          LAG(labeled_as_of) OVER versions AS previous_as_of
        FROM `${dataset}.labeled_predictions`
        WHERE event_timestamp > @late_from AND event_timestamp <= @early_to
        WINDOW versions AS (PARTITION BY prediction_id ORDER BY labeled_as_of)
      ) AS x
      CROSS JOIN UNNEST(['early', 'final']) AS label
      WHERE (label = 'early' AND x.previous_early IS NOT NULL AND x.early_defaulted != x.previous_early)
        OR (label = 'final' AND x.previous_final IS NOT NULL AND x.final_defaulted != x.previous_final)
    ) AS v
    LEFT JOIN (
      SELECT
        transaction_id,
        event_timestamp,
        arrived_at,
        event_type = 'default' OR (event_type = 'instalment_late' AND instalment_number = 2) AS decides_early,
        event_type = 'default' AS decides_final
      FROM (${queries_outcome_arrivals})
    ) AS o
      ON o.transaction_id = v.transaction_id
      AND o.event_timestamp >= v.event_timestamp
      AND o.event_timestamp <= v.horizon
      AND o.arrived_at > v.previous_as_of
      AND o.arrived_at <= v.labeled_as_of
      AND IF(v.label = 'early', o.decides_early, o.decides_final)
    GROUP BY v.cohort_start, v.label, v.labeled_as_of
  ) AS r
) AS s
ON t.cohort_start = s.cohort_start AND t.label = s.label AND t.detected_at = s.detected_at
WHEN MATCHED THEN UPDATE SET
  revision = s.revision,
  labels_revised = s.labels_revised,
  late_outcomes = s.late_outcomes
WHEN NOT MATCHED THEN INSERT (cohort_start, cohort_end, label, revision, detected_at, labels_revised, late_outcomes)
VALUES (s.cohort_start, s.cohort_end, s.label, s.revision, s.detected_at, s.labels_revised, s.late_outcomes)
