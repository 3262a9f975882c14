-- The plan of each comparison (one experiment's treatment version against its control version), fixed when
-- weekly_performance first evaluates the pair and never changed after (shadowgate.evaluation.sequential). A new
-- version on either side (a retrained challenger, a promotion, a rollback) is a new comparison with a plan of its own:
-- a verdict speaks for the two versions whose weeks it combined, never for a version that took an alias later.
-- * plan_id: '<experiment_id>/<comparison>', the key; comparison: the two versions, e.g. 'challenger@2 vs champion@1';
-- The hypothesis H0: ΔAUC <= margin
-- against H1: ΔAUC >= margin + mde, the one-sided alpha (already divided by the challengers compared with the same
-- champion), the power, the most weekly looks, the maximum information (Σ 1/SE² of the weekly DeLong differences at
-- which the plan ends), the spending, the label whose looks decide, and the Monday of the first cohort week it counts.
CREATE TABLE IF NOT EXISTS `${dataset}.comparison_plans` (
  plan_id STRING NOT NULL,
  experiment_id STRING NOT NULL,
  comparison STRING NOT NULL,
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
CLUSTER BY experiment_id, plan_id
