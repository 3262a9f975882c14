-- Repayments, missed instalments and defaults (the OutcomeEvent), one row per event.
CREATE TABLE IF NOT EXISTS `${dataset}.outcomes` (
  outcome_id STRING NOT NULL,
  schema_version INT64 NOT NULL,
  transaction_id STRING NOT NULL,
  event_type STRING NOT NULL,
  event_timestamp TIMESTAMP NOT NULL,
  instalment_number INT64,
  amount FLOAT64,
  received_at TIMESTAMP NOT NULL,
  stream_entry_id STRING NOT NULL,
  loaded_at TIMESTAMP NOT NULL
)
PARTITION BY DATE(event_timestamp)
CLUSTER BY transaction_id
