-- An estimate row (day, model) is written twice in its life: the estimate by the run that checks the day, the
-- realised figures by the run on which its final labels matured. Each pass carries only its own columns (the others
-- NULL), so each column keeps what the pass that owns it wrote last.
MERGE `${dataset}.performance_estimates` AS t
USING ${source} AS s
ON t.estimate_id = s.estimate_id
WHEN MATCHED THEN UPDATE SET
  n = COALESCE(s.n, t.n),
  expected_defaults = COALESCE(s.expected_defaults, t.expected_defaults),
  default_rate = COALESCE(s.default_rate, t.default_rate),
  default_rate_low = COALESCE(s.default_rate_low, t.default_rate_low),
  default_rate_high = COALESCE(s.default_rate_high, t.default_rate_high),
  auc = COALESCE(s.auc, t.auc),
  auc_low = COALESCE(s.auc_low, t.auc_low),
  auc_high = COALESCE(s.auc_high, t.auc_high),
  computed_at = COALESCE(s.computed_at, t.computed_at),
  realised_n = COALESCE(s.realised_n, t.realised_n),
  realised_defaults = COALESCE(s.realised_defaults, t.realised_defaults),
  realised_default_rate = COALESCE(s.realised_default_rate, t.realised_default_rate),
  realised_auc = COALESCE(s.realised_auc, t.realised_auc),
  realised_as_of = COALESCE(s.realised_as_of, t.realised_as_of)
WHEN NOT MATCHED THEN INSERT (${columns}) VALUES (${source_columns})
