"""A model version's training reference for drift checks: the sample training logged with its MLflow run, and the
binned profile computed from it **once per version** and stored beside it (``reference/profile.json``)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from shadowgate.evaluation.drift import ReferenceProfile, build_profile

logger = logging.getLogger(__name__)

SAMPLE_PATH = "reference/reference.parquet"
PROFILE_PATH = "reference/profile.json"
SCORE = "score"
"""The sample's column holding the model's own score."""


class ReferenceMissingError(LookupError):
    """A model version has no reference sample (registered by hand, or trained before references were logged)."""


@dataclass(frozen=True)
class Reference:
    """A version's binned profile and its sample (the sample only when it had to be read: for the report)."""

    profile: ReferenceProfile
    computed: bool
    """True when this call binned the sample (the first check of the version), False when the stored profile was
    read."""


class MlflowReferenceStore:
    """Reads a version's reference from its training run's artifacts, bins it once and stores the profile there.

    Args:
        tracking_uri: the MLflow tracking store.
        categorical: the categorical columns of the sample.
        numerical: the numeric columns of the sample (the model's ``score`` is added).
        bins: quantile bins of a numeric column.
        chunks: chronological chunks of the sample that measure each column's wander.
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        categorical: Sequence[str],
        numerical: Sequence[str],
        bins: int = 10,
        chunks: int = 10,
    ) -> None:
        from mlflow import MlflowClient

        # MLflow draws a progress bar per download on stderr: noise in a task log (process-wide, so only when unset).
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.categorical = tuple(categorical)
        self.numerical = tuple(numerical)
        self.bins = bins
        self.chunks = chunks

    def sample(self, run_id: str | None) -> pd.DataFrame:
        """The reference sample training logged with run ``run_id``."""
        if not run_id:
            raise ReferenceMissingError("the version has no training run")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self._client.download_artifacts(run_id, SAMPLE_PATH, tmp)
            except Exception as error:  # MLflow raises several types for a missing artifact
                raise ReferenceMissingError(f"run {run_id} has no {SAMPLE_PATH}: {error}") from error
            return pd.read_parquet(path)

    def profile(self, version: str, run_id: str | None) -> Reference:
        """The stored profile of ``version`` (its training run ``run_id``); binned from the sample and stored the
        first time, or when it was stored by another layout version or with other bins."""
        if not run_id:
            raise ReferenceMissingError(f"version {version} has no training run")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self._client.download_artifacts(run_id, PROFILE_PATH, tmp)
                stored = ReferenceProfile.from_dict(json.loads(Path(path).read_text()))
                if stored.model_version == version and stored.bins == self.bins:
                    return Reference(profile=stored, computed=False)
            except Exception as error:  # not stored yet (or unreadable): bin the sample
                logger.info("reference profile of version %s not stored yet (%s): binning its sample", version, error)
        frame = self.sample(run_id)
        columns = {c: frame[c].to_numpy() for c in (*self.numerical, *self.categorical) if c in frame.columns}
        if SCORE in frame.columns:
            columns[SCORE] = frame[SCORE].to_numpy()
        timestamps = frame["event_timestamp"].to_numpy() if "event_timestamp" in frame.columns else None
        profile = build_profile(
            columns,
            categorical=self.categorical,
            model_version=version,
            bins=self.bins,
            timestamps=timestamps,
            chunks=self.chunks,
            source=f"runs:/{run_id}/{SAMPLE_PATH}",
        )
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / Path(PROFILE_PATH).name
            out.write_text(json.dumps(profile.to_dict(), indent=1))
            self._client.log_artifact(run_id, str(out), artifact_path=str(Path(PROFILE_PATH).parent))
        return Reference(profile=profile, computed=True)
