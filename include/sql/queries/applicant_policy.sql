-- What two model versions would do with every applicant of a period under one decision policy: the decisions that
-- policy made in [since, until) (purchase time) that both versions scored, each version's approvals at the policy's
-- base cut-off (a score below medium is approved), and the expected loss of those approvals priced both ways (PD x
-- amount, with the treatment's PD and with the control's), so that both are priced with the same PDs. Every
-- applicant, not only the approved ones: a shadow challenger scored them all, and the champion's own approved
-- purchases are the ones it approved by construction (their approval rate tells nothing).
SELECT
  COUNT(*) AS applicants,
  CAST(COUNTIF(t.score < @medium) AS INT64) AS approved_treatment,
  CAST(COUNTIF(c.score < @medium) AS INT64) AS approved_control,
  SUM(IF(t.score < @medium, t.score * p.amount, 0)) AS loss_treatment_priced_by_treatment,
  SUM(IF(c.score < @medium, t.score * p.amount, 0)) AS loss_control_priced_by_treatment,
  SUM(IF(t.score < @medium, c.score * p.amount, 0)) AS loss_treatment_priced_by_control,
  SUM(IF(c.score < @medium, c.score * p.amount, 0)) AS loss_control_priced_by_control
FROM `${dataset}.prediction_logs` AS p, UNNEST(p.scores) AS t, UNNEST(p.scores) AS c
WHERE p.event_timestamp >= @since
  AND p.event_timestamp < @until
  AND p.policy_name = @policy
  AND CONCAT(t.alias, '@', t.model_version) = @treatment
  AND CONCAT(c.alias, '@', c.model_version) = @control
  AND t.status = 'ok'
  AND c.status = 'ok'
  AND t.score IS NOT NULL
  AND c.score IS NOT NULL
