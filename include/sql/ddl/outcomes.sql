-- Repayments, missed instalments and defaults (the OutcomeEvent), one row per event. The columns are derived from
-- the event model (shadowgate.events.schemas).
CREATE TABLE IF NOT EXISTS `${dataset}.outcomes` (
  ${outcomes_columns}
)
PARTITION BY DATE(event_timestamp)
CLUSTER BY transaction_id
