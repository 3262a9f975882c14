"""Which model artifacts may run: skops with the reviewed types only, the contract's features, no code, no pickle.

Artifacts are written by MLflow's own ``save_model`` into a folder (files only, no tracking store) and read back by
``load_trusted_model``; the registry path is tested in tests/api/test_model_trust.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from shadowgate.decisioning.model_trust import (
    REVIEWED_TYPES,
    ModelRefusedError,
    RefusalReason,
    artifact_metadata,
    check_reviewed,
    checked_skops_types,
    skops_types,
)
from shadowgate.features import FEATURE_NAMES, FEATURE_SET, features_frame
from shadowgate.serving.artifacts import load_trusted_model
from shadowgate.simulation import SimulationResult
from shadowgate.training.train import ModelKind, build_estimator


@pytest.fixture(scope="module")
def frame(world: Callable[..., SimulationResult]) -> tuple[pd.DataFrame, np.ndarray]:
    sim = world()
    x = pd.DataFrame(features_frame(sim.transactions.head(15_000)), columns=list(FEATURE_NAMES))
    return x, sim.labels["is_default"].to_numpy(dtype=np.int64)[:15_000]


@pytest.fixture(scope="module")
def models(frame: tuple[pd.DataFrame, np.ndarray]) -> dict[ModelKind, Any]:
    x, y = frame
    return {kind: build_estimator(kind, seed=11).fit(x, y) for kind in ModelKind}


def _identity(x: Any) -> Any:
    return x


def _save(model: Any, path: Path, **kwargs: Any) -> Path:
    import mlflow.sklearn

    # Explicit requirements: inferring them loads the model in a subprocess (~15 s a save).
    options: dict[str, Any] = {
        "serialization_format": "skops",
        "metadata": artifact_metadata(),
        "pip_requirements": ["scikit-learn"],
    }
    if kwargs.get("serialization_format", "skops") == "skops" and "skops_trusted_types" not in kwargs:
        options["skops_trusted_types"] = checked_skops_types(model)
    mlflow.sklearn.save_model(model, str(path), **{**options, **kwargs})
    return path


def test_the_reviewed_types_are_exactly_what_the_two_families_are_made_of(models: dict[ModelKind, Any]) -> None:
    import skops.io

    needed = set()
    for model in models.values():
        types, _ = skops_types(skops.io.dumps(model))
        needed |= types
    # Nothing missing (training would refuse its own models) and nothing unused (each entry is a reviewed risk).
    assert needed == REVIEWED_TYPES


def test_both_families_load_and_score_like_the_original(
    models: dict[ModelKind, Any], frame: tuple[pd.DataFrame, np.ndarray], tmp_path: Path
) -> None:
    x, _ = frame
    for kind, model in models.items():
        loaded = load_trusted_model(_save(model, tmp_path / kind.value))
        np.testing.assert_array_equal(loaded.predict_proba(x.head(500)), model.predict_proba(x.head(500)))


@pytest.mark.parametrize("serialization", ["pickle", "cloudpickle"])
def test_pickle_and_cloudpickle_are_refused_unopened(
    serialization: str, models: dict[ModelKind, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    path = _save(models[ModelKind.SCORECARD], tmp_path / "m", serialization_format=serialization)
    opened: list[Any] = []
    monkeypatch.setattr(pickle, "load", lambda *a, **k: opened.append(a))
    with pytest.raises(ModelRefusedError) as refused:
        load_trusted_model(path)
    assert refused.value.reason is RefusalReason.FORMAT
    assert f"serialization {serialization!r} is not skops" in str(refused.value)
    assert opened == []


def _edit_mlmodel(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    edit(mlmodel)
    (path / "MLmodel").write_text(yaml.safe_dump(mlmodel))


@pytest.mark.parametrize(
    ("edit", "reason", "message"),
    [
        (lambda m: m["flavors"].pop("sklearn"), RefusalReason.FLAVOR, "no sklearn flavor"),
        (lambda m: m["flavors"]["sklearn"].update(code="code"), RefusalReason.CODE, "ships code"),
        (lambda m: m["flavors"]["python_function"].update(code="code"), RefusalReason.CODE, "ships code"),
        (lambda m: m["flavors"]["sklearn"].pop("serialization_format"), RefusalReason.FORMAT, "None is not skops"),
        (
            lambda m: m["flavors"]["sklearn"].update(pickled_model="../../etc/passwd"),
            RefusalReason.MALFORMED,
            "not a file inside the artifact",
        ),
        (lambda m: m["metadata"].update(feature_set="fs-000000000000"), RefusalReason.FEATURES, "feature set"),
        (lambda m: m.pop("metadata"), RefusalReason.FEATURES, "feature set None"),
    ],
)
def test_what_the_mlmodel_says_is_checked(
    edit: Callable[[dict[str, Any]], None],
    reason: RefusalReason,
    message: str,
    models: dict[ModelKind, Any],
    tmp_path: Path,
) -> None:
    path = _save(models[ModelKind.SCORECARD], tmp_path / "m")
    (path / "code").mkdir()
    (path / "code" / "evil.py").write_text("raise SystemExit('imported code from the artifact')\n")
    _edit_mlmodel(path, edit)
    with pytest.raises(ModelRefusedError, match=message) as refused:
        load_trusted_model(path)
    assert refused.value.reason is reason


def test_a_missing_mlmodel_is_malformed(tmp_path: Path) -> None:
    with pytest.raises(ModelRefusedError) as refused:
        load_trusted_model(tmp_path)
    assert refused.value.reason is RefusalReason.MALFORMED


def test_types_outside_the_reviewed_list_are_refused_even_if_the_artifact_trusts_them(
    frame: tuple[pd.DataFrame, np.ndarray], tmp_path: Path
) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    x, y = frame
    # A callable in the file, listed as trusted by the artifact itself (MLflow's loader would accept it).
    with_function = Pipeline([("f", FunctionTransformer(_identity)), ("logit", LogisticRegression(max_iter=50))])
    with_function.fit(x, y)
    import skops.io

    own_list = skops.io.get_untrusted_types(data=skops.io.dumps(with_function))
    assert own_list  # skops itself would not load it without that list
    path = _save(with_function, tmp_path / "function", skops_trusted_types=own_list)
    with pytest.raises(ModelRefusedError, match="types not reviewed") as refused:
        load_trusted_model(path)
    assert refused.value.reason is RefusalReason.UNTRUSTED_TYPES
    assert "sklearn.preprocessing._function_transformer.FunctionTransformer" in str(refused.value)
    assert "test_artifacts._identity" in str(refused.value) and "<FunctionNode>" in str(refused.value)

    # Trusted by skops' defaults (any sklearn estimator), not by our list.
    bayes = GaussianNB().fit(x, y)
    assert skops.io.get_untrusted_types(data=skops.io.dumps(bayes)) == []
    with pytest.raises(ModelRefusedError) as refused:
        check_reviewed(skops.io.dumps(bayes))
    assert refused.value.reason is RefusalReason.UNTRUSTED_TYPES
    assert "sklearn.naive_bayes.GaussianNB" in str(refused.value)
    with pytest.raises(ModelRefusedError, match="types not reviewed"):
        checked_skops_types(bayes)  # training refuses to log it in the first place


def test_a_model_fitted_on_other_features_is_refused(frame: tuple[pd.DataFrame, np.ndarray], tmp_path: Path) -> None:
    x, y = frame
    renamed = x.rename(columns={FEATURE_NAMES[0]: "something_else"})
    fewer = x.drop(columns=[FEATURE_NAMES[-1]])
    reordered = x[list(reversed(FEATURE_NAMES))]
    for name, data in (("renamed", renamed), ("fewer", fewer), ("reordered", reordered), ("unnamed", x.to_numpy())):
        model = build_estimator(ModelKind.SCORECARD, seed=1).fit(data, y)
        # The metadata claims the contract's feature set: the model's own feature names still tell.
        path = _save(model, tmp_path / name)
        assert yaml.safe_load((path / "MLmodel").read_text())["metadata"]["feature_set"] == FEATURE_SET
        with pytest.raises(ModelRefusedError) as refused:
            load_trusted_model(path)
        assert refused.value.reason is RefusalReason.FEATURES, name
