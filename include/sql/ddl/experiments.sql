-- Every version of every experiment's config (lifecycle, mode, share), for joins by experiment_version.
CREATE TABLE IF NOT EXISTS `${dataset}.experiments` (
  experiment_id STRING NOT NULL,
  experiment_version INT64 NOT NULL,
  status STRING NOT NULL,
  mode STRING NOT NULL,
  treatment_share FLOAT64 NOT NULL,
  control_alias STRING NOT NULL,
  treatment_alias STRING NOT NULL,
  changed_at TIMESTAMP NOT NULL,
  changed_by STRING NOT NULL,
  config JSON
)
PARTITION BY DATE(changed_at)
CLUSTER BY experiment_id
