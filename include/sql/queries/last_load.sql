-- When the uploader last committed anything (the staleness alert compares it with now).
SELECT MAX(loaded_at) AS last_loaded_at FROM (
  SELECT MAX(loaded_at) AS loaded_at FROM `${dataset}.prediction_logs`
  UNION ALL SELECT MAX(loaded_at) FROM `${dataset}.outcomes`
)
