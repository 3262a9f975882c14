-- The recorded plan of one comparison (a pair of versions in one experiment; no row: none recorded yet).
SELECT *
FROM `${dataset}.comparison_plans`
WHERE plan_id = @plan_id
