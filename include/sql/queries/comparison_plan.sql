-- The recorded plan of one comparison (no row: none recorded yet).
SELECT *
FROM `${dataset}.comparison_plans`
WHERE experiment_id = @experiment_id
