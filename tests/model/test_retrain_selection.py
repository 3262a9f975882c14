"""What training on the logs costs: a retraining sees only the decisions the champion approved (a denied applicant
never gets an outcome), so it learns from the champion's selection. Measured against training on every applicant,
which only the simulator can do. The README quotes these figures.

The 400-day stable world of ``test_drift_worlds.py`` (the session caches it): a scorecard champion trained on days
100–199 on every applicant decides days 200–349 (approve below 0.25). Two gradient-boosting challengers are trained
on days 200–299, with the final label (the simulator's truth):

* **as retrain_challenger does**: on the approved decisions only;
* **the unreachable ideal**: on every applicant.

Both are then measured on days 300–349, on every applicant and on the approved ones, with DeLong's paired test.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from shadowgate.config import DriftScenario
from shadowgate.evaluation.stats import delong_test
from shadowgate.features import FEATURE_NAMES, features_frame
from shadowgate.simulation import SimulationResult
from shadowgate.training.train import ModelKind, build_estimator
from tests.model.test_drift_worlds import SIZE

APPROVE_BELOW = 0.25


def test_training_on_approved_decisions_costs_little_ranking_on_every_applicant(
    world: Callable[..., SimulationResult],
) -> None:
    stable = world(scenario=DriftScenario.NONE, **SIZE)
    ts = stable.transactions["event_timestamp"]
    day = ((ts - ts.min().normalize()).dt.days).to_numpy()
    x = pd.DataFrame(features_frame(stable.transactions), columns=list(FEATURE_NAMES))
    y = stable.labels["is_default"].to_numpy(dtype=np.int64)
    before = (day >= 100) & (day < 200)
    champion = build_estimator(ModelKind.SCORECARD, seed=11).fit(x[before], y[before])
    approved = champion.predict_proba(x)[:, 1] < APPROVE_BELOW
    window = (day >= 200) & (day < 300)
    test = (day >= 300) & (day < 350)
    logged = build_estimator(ModelKind.GRADIENT_BOOSTING, seed=11).fit(x[window & approved], y[window & approved])
    ideal = build_estimator(ModelKind.GRADIENT_BOOSTING, seed=11).fit(x[window], y[window])
    lines = []
    results = {}
    for name, rows in (("every applicant", test), ("approved", test & approved)):
        r = delong_test(y[rows], logged.predict_proba(x[rows])[:, 1], ideal.predict_proba(x[rows])[:, 1])
        results[name] = r
        lines.append(
            f"  on {name} ({int(rows.sum()):,} purchases, {int(y[rows].sum()):,} defaults): trained on approved "
            f"{r.auc_a:.4f}, on every applicant {r.auc_b:.4f}, difference {r.difference:+.4f} "
            f"(95 % CI {r.ci[0]:+.4f} to {r.ci[1]:+.4f})"
        )
    print(
        f"\nselection cost of training on the logs ({int((window & approved).sum()):,} approved of "
        f"{int(window.sum()):,} applicants in the window):\n" + "\n".join(lines)
    )
    everyone = results["every applicant"]
    # Learning from the approved only can only lose information about the riskiest applicants: never better beyond
    # noise, and (measured) the loss stays small on this world.
    assert everyone.ci[0] < 0.005
    assert everyone.difference > -0.05
