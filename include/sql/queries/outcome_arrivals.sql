-- The outcomes that had reached the system by as_of, each with its arrival instant: when shadowgate received it
-- (received_at, stamped at ingest), or the delivery its producer stated (delivered_at: a replay or an import of
-- history), never later than the receipt. Included by queries/ground_truth_labels, queries/ground_truth_report and
-- merge/label_revisions: every label as of a date, every feed count and every late-delivery count reads arrivals
-- through this one definition (shadowgate.events.outcome.arrival is its reference in Python).
--
-- Parameters: as_of; late_from (the oldest purchase a run looks at; outcomes known before it are not read, so BigQuery
-- prunes the outcomes partitions to the run's range).
SELECT
  o.transaction_id,
  o.event_type,
  o.instalment_number,
  o.event_timestamp,
  COALESCE(LEAST(o.delivered_at, o.received_at), o.received_at) AS arrived_at
FROM `${dataset}.outcomes` AS o
WHERE o.event_timestamp > @late_from
  AND o.event_timestamp <= @as_of
  AND COALESCE(LEAST(o.delivered_at, o.received_at), o.received_at) <= @as_of
