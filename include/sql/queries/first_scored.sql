-- When each of a few model versions first scored a labelled decision with a usable score in the period asked
-- (purchase time): the first cohort week a comparison of two versions can count (its plan starts there, not at an
-- older version's start). Read from labeled_predictions: the rows a comparison is made on.
SELECT s.alias, s.model_version, MIN(l.event_timestamp) AS first_scored_at
FROM `${dataset}.labeled_predictions` AS l, UNNEST(l.scores) AS s
WHERE l.event_timestamp >= @since
  AND l.event_timestamp < @before
  AND s.status = 'ok'
  AND CONCAT(s.alias, '@', s.model_version) IN UNNEST(@models)
GROUP BY s.alias, s.model_version
