-- One day's early performance estimates beside their realised figures (drift_check shows them once the day's final
-- labels have matured).
SELECT alias, model_version, default_rate, default_rate_low, default_rate_high, auc, auc_low, auc_high,
  realised_default_rate, realised_auc, realised_n
FROM `${dataset}.performance_estimates`
WHERE day = @day
ORDER BY alias, model_version
