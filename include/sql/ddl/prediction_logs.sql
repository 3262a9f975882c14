-- One row per served decision (the PredictionEvent), every model's score nested. The columns are derived from the
-- event model (shadowgate.events.schemas): its fields, the contract inputs flattened, the features as one struct
-- with a field per name of every known feature set, then the load metadata.
CREATE TABLE IF NOT EXISTS `${dataset}.prediction_logs` (
  ${prediction_logs_columns}
)
PARTITION BY DATE(served_at)
CLUSTER BY customer_id_hash, served_by
