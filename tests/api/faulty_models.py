"""Compiled-model fakes for the fault tests. They cross to the shadow process (pickled with the model snapshot), so
this module imports next to nothing: unpickling them there must be as quick as unpickling a real model."""

from __future__ import annotations

import time
from typing import Any

import numpy as np


class Broken:
    """A compiled model that fails (a corrupted challenger)."""

    family = "tree_ensemble"
    n_features = 38
    fingerprint = "broken"

    def score_one(self, x: Any) -> float:
        raise RuntimeError("corrupted challenger")

    def score_batch(self, x: np.ndarray) -> np.ndarray:
        raise RuntimeError("corrupted challenger")


class Slow:
    """Wraps a real compiled model and makes it slow (a challenger that blows its budget)."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.family = inner.family
        self.n_features = inner.n_features

    def score_one(self, x: Any) -> float:
        time.sleep(self.delay_s)
        return self.inner.score_one(x)

    def score_batch(self, x: np.ndarray) -> np.ndarray:
        # Busy CPU per row, however the rows are batched (CPU time is what the budget judges).
        end = time.thread_time() + self.delay_s * len(x)
        while time.thread_time() < end:
            pass
        return self.inner.score_batch(x)


class Hanging:
    """A challenger whose batch scoring never returns (a deadlock in a model library)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.family = inner.family
        self.n_features = inner.n_features

    def score_one(self, x: Any) -> float:
        return self.inner.score_one(x)

    def score_batch(self, x: np.ndarray) -> np.ndarray:
        time.sleep(3600)
        return self.inner.score_batch(x)
