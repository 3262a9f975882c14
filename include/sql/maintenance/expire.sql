-- Delete the rows of one retained table older than the retention (DuckDB; BigQuery expires partitions itself, see
-- maintenance/retention_options). ${table} and ${column} are filled by shadowgate.pipelines.retention from its own list
-- (never from input); cutoff is the day the retention starts.
DELETE FROM `${dataset}.${table}` WHERE DATE(${column}) < @cutoff
