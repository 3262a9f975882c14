-- Rows per loaded table: the reconciliation of events produced with rows stored.
SELECT 'prediction_logs' AS table_name, COUNT(*) AS row_count FROM `${dataset}.prediction_logs`
UNION ALL SELECT 'outcomes', COUNT(*) FROM `${dataset}.outcomes`
UNION ALL SELECT 'quarantine', COUNT(*) FROM `${dataset}.quarantine`
