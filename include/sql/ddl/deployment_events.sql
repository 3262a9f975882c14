-- The audit trail of alias moves: promotions, rejections and rollbacks, with their reasons and evidence.
CREATE TABLE IF NOT EXISTS `${dataset}.deployment_events` (
  event_id STRING NOT NULL,
  occurred_at TIMESTAMP NOT NULL,
  action STRING NOT NULL,
  model_name STRING NOT NULL,
  alias STRING NOT NULL,
  from_version STRING,
  to_version STRING,
  reason STRING NOT NULL,
  actor STRING NOT NULL,
  evidence JSON
)
PARTITION BY DATE(occurred_at)
CLUSTER BY model_name
