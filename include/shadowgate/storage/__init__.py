"""Storage adapters: the warehouse (DuckDB embedded, BigQuery in production) and the Redis streams reader."""
