-- Each model version's scoring latency over a period (purchase time in [period_start, period_end)), from the
-- latencies logged with every score: the promotion gate's p99 within budget. Only scores that were served count
-- (status 'ok'); APPROX_QUANTILES gives percentiles at 1 % resolution.
SELECT
  s.alias,
  s.model_version,
  COUNT(*) AS scored,
  APPROX_QUANTILES(s.latency_us, 100)[OFFSET(50)] AS p50_us,
  APPROX_QUANTILES(s.latency_us, 100)[OFFSET(99)] AS p99_us
FROM `${dataset}.prediction_logs` AS p, UNNEST(p.scores) AS s
WHERE p.event_timestamp >= @period_start
  AND p.event_timestamp < @period_end
  AND s.status = 'ok'
  AND s.latency_us IS NOT NULL
GROUP BY s.alias, s.model_version
ORDER BY s.alias, s.model_version
