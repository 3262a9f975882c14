"""The true default mechanism of the simulated world (known here, hidden from the models).

Non-linear with interactions on purpose: a hinge on utilisation, a U-shaped age effect, and four interactions
(new customer × near the limit, frequent lateness × velocity, night-time × risky categories, young × large basket
relative to the limit). A logistic scorecard on the engineered features can only approximate it; gradient boosting
can learn it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

CATEGORY_EFFECT: dict[str, float] = {
    "electronics": 0.35,
    "fashion": 0.0,
    "home": -0.15,
    "beauty": -0.1,
    "travel": 0.25,
    "groceries": -0.35,
    "sports": -0.05,
    "gaming": 0.45,
    "crypto": 0.9,
}
CHANNEL_EFFECT: dict[str, float] = {"web": 0.1, "app": 0.0, "in_store": -0.4, "social": 0.55}
NIGHT_RISKY_CATEGORIES = ("electronics", "gaming", "crypto")
LATENT_WEIGHT = 0.8
CONCEPT_SHOCK_LIFT = 1.6
"""Added to the logit of the shocked segment under the concept-shock scenario."""


def _lookup(values: np.ndarray, table: Mapping[str, float]) -> np.ndarray:
    out = np.zeros(len(values), dtype=np.float64)
    for key, effect in table.items():
        out[values == key] = effect
    return out


def logit_without_intercept(columns: Mapping[str, np.ndarray], *, hour: np.ndarray, latent: np.ndarray) -> np.ndarray:
    """The default log-odds before the calibrated intercept.

    Args:
        columns: contract columns (amount, credit_limit, outstanding_balance, …) as arrays.
        hour: hour of day (UTC) of each purchase.
        latent: the customer's unobserved risk (standard normal).
    """
    amount = columns["amount"]
    limit = columns["credit_limit"]
    purchases = columns["prior_purchases"]
    util_after = (columns["outstanding_balance"] + amount) / limit
    late_rate = columns["prior_late_payments"] / (purchases + 1.0)
    is_new = columns["customer_tenure_days"] < 90
    night = hour < 6
    age_z = (columns["customer_age"] - 42.0) / 12.0
    category = columns["merchant_category"]
    return (
        LATENT_WEIGHT * latent
        + 2.4 * np.maximum(util_after - 0.6, 0.0)
        + 2.0 * ((util_after > 0.8) & is_new)
        + 1.2 * ((late_rate > 0.2) & (columns["purchases_last_24h"] >= 1))
        + 1.3 * (columns["prior_defaults"] > 0)
        + 1.4 * (night & np.isin(category, NIGHT_RISKY_CATEGORIES))
        + 0.5 * age_z**2
        - 0.4 * np.abs(age_z)
        + 0.25 * np.log(amount / 100.0)
        + 1.2 * ((amount / limit > 0.25) & (columns["customer_age"] < 27))
        + 0.5 * (columns["installments"] == 6)
        + _lookup(category, CATEGORY_EFFECT)
        + _lookup(columns["channel"], CHANNEL_EFFECT)
    )


def concept_shock_segment(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """The segment whose defaults rise under the concept shock: customers under 30 buying on the app."""
    return (columns["customer_age"] < 30) & (columns["channel"] == "app")


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def calibrate_intercept(logits: np.ndarray, target_rate: float) -> float:
    """The intercept b with mean(sigmoid(logits + b)) == target_rate (bisection; the mean is monotone in b)."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2.0
        if sigmoid(logits + mid).mean() < target_rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0
