"""Only trusted models run: what a registry writer (or someone with the API host's disk) could slip in is refused,
counted on /metrics, and the API keeps deciding with the champion it had. Real MLflow store, real Redis, the app.

Each test works on a registered model of its own whose version 1 is the session's scorecard champion (same files),
so moving its aliases touches no other test.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shadowgate.config import MLflowSettings
from shadowgate.decisioning.model_trust import RefusalReason, artifact_metadata, checked_skops_types
from shadowgate.features import FEATURE_NAMES, features_frame
from shadowgate.serving.runtime import Runtime
from shadowgate.simulation import SimulationResult
from shadowgate.training.train import ModelKind, build_estimator
from tests.api.conftest import ADMIN, Registry, make_client
from tests.api.test_decisions import URL, _tx

Factory = Callable[..., Callable[[], Runtime]]
REFUSED = "shadowgate_model_loads_refused_total"


@dataclass(frozen=True)
class TrustModel:
    settings: MLflowSettings
    good: str

    @property
    def name(self) -> str:
        return self.settings.model_name


@pytest.fixture
def trust(registry: Registry) -> TrustModel:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(registry.mlflow.tracking_uri)
    client = MlflowClient(tracking_uri=registry.mlflow.tracking_uri, registry_uri=registry.mlflow.tracking_uri)
    name = f"trust_{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    champion = client.get_model_version("bnpl_default", registry.versions["champion"])
    version = client.create_model_version(name, source=champion.source, run_id=champion.run_id).version
    client.set_registered_model_alias(name, "champion", version)
    return TrustModel(settings=registry.mlflow.model_copy(update={"model_name": name}), good=str(version))


@pytest.fixture(scope="module")
def features(baseline: SimulationResult) -> tuple[pd.DataFrame, np.ndarray]:
    x = pd.DataFrame(features_frame(baseline.transactions.head(5_000)), columns=list(FEATURE_NAMES))
    return x, baseline.labels["is_default"].to_numpy(dtype=np.int64)[:5_000]


class _Trap:
    """Unpickling it runs code (creates ``marker``): what a pickle artifact lets a registry writer do to the API."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))

    def predict(self, x: Any) -> Any:
        return np.zeros(len(x))


def _identity(x: Any) -> Any:
    return x


def _log(model: Any, trust: TrustModel, **options: Any) -> str:
    """Register ``model`` as a new version of the trust model, as anyone with registry write access could."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(trust.settings.training_experiment)
    with mlflow.start_run(experiment_id=experiment.experiment_id):
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=trust.name, pip_requirements=["scikit-learn"], **options
        )
    return str(info.registered_model_version)


def _bad_version(case: str, trust: TrustModel, features: tuple[pd.DataFrame, np.ndarray], marker: Path) -> str:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    x, y = features
    if case in ("pickle", "cloudpickle"):
        return _log(_Trap(marker), trust, serialization_format=case)
    if case == "untrusted_type":
        import skops.io

        model = Pipeline([("f", FunctionTransformer(_identity)), ("logit", LogisticRegression(max_iter=300))]).fit(x, y)
        own_list = skops.io.get_untrusted_types(data=skops.io.dumps(model))
        # The artifact trusts its own types: MLflow's loader would run it.
        return _log(
            model, trust, serialization_format="skops", skops_trusted_types=own_list, metadata=artifact_metadata()
        )
    assert case == "wrong_features"
    renamed = x.rename(columns={FEATURE_NAMES[0]: "amount_raw"})
    model = build_estimator(ModelKind.SCORECARD, seed=1).fit(renamed, y)
    return _log(
        model,
        trust,
        serialization_format="skops",
        skops_trusted_types=checked_skops_types(model),
        metadata=artifact_metadata(),  # claims the contract's feature set: the fitted feature names tell the truth
    )


def _refused(runtime: Runtime, count: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(runtime.models.stats.refused.values()) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def _refusal_metrics(text: str) -> dict[str, float]:
    prefix = f'{REFUSED}{{reason="'
    return {
        line[len(prefix) : line.index('"}')]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


EXPECTED_REASON = {
    "pickle": RefusalReason.FORMAT,
    "cloudpickle": RefusalReason.FORMAT,
    "untrusted_type": RefusalReason.UNTRUSTED_TYPES,
    "wrong_features": RefusalReason.FEATURES,
}


@pytest.mark.parametrize("case", sorted(EXPECTED_REASON))
def test_an_untrusted_version_is_refused_and_the_old_champion_keeps_deciding(
    case: str,
    runtime_factory: Factory,
    trust: TrustModel,
    features: tuple[pd.DataFrame, np.ndarray],
    tmp_path: Path,
) -> None:
    from mlflow import MlflowClient

    marker = tmp_path / "code-ran-in-the-api"
    with make_client(runtime_factory(mlflow=trust.settings)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        before = client.post(URL, json=_tx(5)).json()
        assert before["model"] == {"alias": "champion", "version": trust.good}
        generation = runtime.models.snapshot.generation

        bad = _bad_version(case, trust, features, marker)
        mlflow_client = MlflowClient(tracking_uri=trust.settings.tracking_uri, registry_uri=trust.settings.tracking_uri)
        mlflow_client.set_registered_model_alias(trust.name, "champion", bad)
        _refused(runtime, 1)
        time.sleep(1.0)  # several more polls (every 0.2 s): the refused version is not fetched or counted again

        reason = EXPECTED_REASON[case].value
        assert runtime.models.stats.refused == {reason: 1}
        metrics = _refusal_metrics(client.get("/metrics").text)
        assert metrics[reason] == 1.0 and sum(metrics.values()) == 1.0
        assert runtime.models.snapshot.generation == generation  # the snapshot was never swapped
        after = client.post(URL, json=_tx(5)).json()
        assert after["model"] == {"alias": "champion", "version": trust.good}
        assert after["risk_score"] == before["risk_score"]
        served = client.get("/v1/models").json()
        assert served["aliases"]["champion"]["version"] == trust.good
        assert f"champion=v{bad}: refused: {reason}" in served["registry"]["last_error"]
        assert not marker.exists()
    cached = tmp_path / "home" / "serving" / "model_cache" / trust.name / "versions"
    assert sorted(p.name for p in cached.iterdir()) == [trust.good]  # nothing refused was cached

    if case in ("pickle", "cloudpickle"):
        # The control: the same artifact, unpickled the way MLflow's loader would, does run its code.
        import pickle

        import mlflow

        local = Path(mlflow.artifacts.download_artifacts(f"models:/{trust.name}/{bad}", dst_path=str(tmp_path / "a")))
        with open(local / "model.pkl", "rb") as handle:
            pickle.load(handle)
        assert marker.is_dir()


def _tamper(cache: Path) -> None:
    """Change the champion's weights and recompute the bare fingerprint (enough to fool an unkeyed hash)."""
    from shadowgate.serving.scorer import _fingerprint

    with np.load(cache / "arrays.npz", allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["weights"] = -arrays["weights"]
    np.savez(cache / "arrays.npz", **arrays)
    meta = json.loads((cache / "meta.json").read_text())
    meta["fingerprint"] = _fingerprint(meta["family"], meta["n_features"], arrays)
    (cache / "meta.json").write_text(json.dumps(meta))


def test_a_tampered_cache_is_refused_refetched_and_with_the_registry_down_not_served(
    runtime_factory: Factory, trust: TrustModel, tmp_path: Path
) -> None:
    from tests.api.test_resilience import _dead_port

    with make_client(runtime_factory(mlflow=trust.settings)) as first:
        expected = first.post(URL, json=_tx(7)).json()
    versions = tmp_path / "home" / "serving" / "model_cache" / trust.name / "versions" / trust.good
    (cache,) = [p for p in versions.iterdir() if not p.name.endswith(".refused")]

    _tamper(cache)
    with make_client(runtime_factory(mlflow=trust.settings)) as second:
        ready = second.get("/health/ready", headers=ADMIN).json()
        assert ready["models"] == {"champion": trust.good} and ready["models_from"] == {"champion": "registry"}
        answer = second.post(URL, json=_tx(7)).json()
        assert answer["model"] == expected["model"] and answer["risk_score"] == expected["risk_score"]
        metrics = _refusal_metrics(second.get("/metrics").text)
        assert metrics["cache_integrity"] == 1.0 and sum(metrics.values()) == 1.0

    dead = trust.settings.model_copy(update={"tracking_uri": f"http://127.0.0.1:{_dead_port()}"})
    with make_client(runtime_factory(mlflow=dead)) as third:  # the re-fetched copy was cached again, signed
        assert third.get("/health/ready", headers=ADMIN).json()["models_from"] == {"champion": "cache"}
        assert third.post(URL, json=_tx(7)).json()["risk_score"] == expected["risk_score"]

    _tamper(cache)
    with make_client(runtime_factory(mlflow=dead)) as fourth:
        assert fourth.get("/health/ready", headers=ADMIN).status_code == 503
        answer = fourth.post(URL, json=_tx(7)).json()
        assert answer["fallback"] is True and answer["model"] == {"alias": None, "version": None}
        metrics = _refusal_metrics(fourth.get("/metrics").text)
        assert metrics["cache_integrity"] == 1.0 and sum(metrics.values()) == 1.0
