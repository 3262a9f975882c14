-- The plan of each comparison (one experiment: a challenger against the champion), fixed when weekly_performance
-- first evaluates it and never changed after (shadowgate.evaluation.sequential): the hypothesis H0: ΔAUC <= margin
-- against H1: ΔAUC >= margin + mde, the one-sided alpha (already divided by the challengers compared with the same
-- champion), the power, the most weekly looks, the maximum information (Σ 1/SE² of the weekly DeLong differences at
-- which the plan ends), the spending, the label whose looks decide, and the Monday of the first cohort week it counts.
CREATE TABLE IF NOT EXISTS `${dataset}.comparison_plans` (
  experiment_id STRING NOT NULL,
  control_alias STRING NOT NULL,
  treatment_alias STRING NOT NULL,
  started_on DATE NOT NULL,
  decision_label STRING NOT NULL,
  margin FLOAT64 NOT NULL,
  mde FLOAT64 NOT NULL,
  alpha FLOAT64 NOT NULL,
  power FLOAT64 NOT NULL,
  max_looks INT64 NOT NULL,
  max_information FLOAT64 NOT NULL,
  futility BOOL NOT NULL,
  comparisons INT64 NOT NULL,
  spending STRING NOT NULL,
  created_at TIMESTAMP NOT NULL,
  description STRING NOT NULL
)
CLUSTER BY experiment_id
