-- Bring a retained BigQuery table created before the retention setting (or with another value) to it: its partitions
-- older than retention_days expire. CREATE TABLE IF NOT EXISTS does not change an existing table's options.
ALTER TABLE `${dataset}.${table}` SET OPTIONS (partition_expiration_days = ${retention_days})
