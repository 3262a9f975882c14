"""The assets shadowgate DAGs produce and consume (one definition, so producer and consumer cannot disagree)."""

from __future__ import annotations

from airflow.sdk import Asset

PREDICTION_LOGS = Asset(name="prediction_logs", uri="x-shadowgate://warehouse/prediction_logs")
"""The warehouse table ``prediction_logs``: appended by ``upload_predictions``; ``canary_guard`` runs on it."""

LABELED_PREDICTIONS = Asset(name="labeled_predictions", uri="x-shadowgate://warehouse/labeled_predictions")
"""The warehouse table ``labeled_predictions``: updated by ``join_ground_truth``, read by ``weekly_performance``."""

MODEL_METRICS = Asset(name="model_metrics", uri="x-shadowgate://warehouse/model_metrics")
"""The warehouse table ``model_metrics``: written by ``weekly_performance``; ``promote_challenger`` runs on it."""

DRIFT = Asset(name="drift", uri="x-shadowgate://drift/found")
"""An event when ``drift_check`` found drift or unseen categories on a day; ``retrain_challenger`` runs on it."""
