"""Compiled scorers: exact parity with sklearn, a verified on-disk format, and refusal of what they cannot compile."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowgate.features import FEATURE_NAMES, features_frame, features_one
from shadowgate.serving.scorer import (
    LogisticScorer,
    TreeEnsembleScorer,
    UnsupportedModelError,
    compile_model,
    load_compiled,
    save_compiled,
)
from shadowgate.simulation import SimulationResult
from shadowgate.training.train import ModelKind, build_estimator
from tests.strategies import transactions

KEY = b"test-cache-key"
PARITY = 1e-6
N_TRAIN = 20_000
N_EVAL = 10_000
NAN_COLUMNS = (FEATURE_NAMES.index("utilisation"), FEATURE_NAMES.index("customer_age"))


@dataclass(frozen=True)
class Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray


@dataclass(frozen=True)
class Fitted:
    sklearn: Any
    compiled: Any


def _with_nans(x: np.ndarray, *, seed: int, share: float) -> np.ndarray:
    out = x.copy()
    rng = np.random.default_rng(seed)
    for column in NAN_COLUMNS:
        out[rng.random(len(out)) < share, column] = np.nan
    return out


@pytest.fixture(scope="module")
def data(world: Callable[..., SimulationResult]) -> Data:
    sim = world()
    assert (sim.labels["transaction_id"].to_numpy() == sim.transactions["transaction_id"].to_numpy()).all()
    x = features_frame(sim.transactions)
    y = sim.labels["is_default"].to_numpy(dtype=np.int64)
    assert len(x) >= N_TRAIN + N_EVAL
    return Data(x_train=x[:N_TRAIN], y_train=y[:N_TRAIN], x_eval=x[N_TRAIN : N_TRAIN + N_EVAL])


@pytest.fixture(scope="module")
def scorecard(data: Data) -> Fitted:
    model = build_estimator(ModelKind.SCORECARD, seed=3).fit(data.x_train, data.y_train)
    return Fitted(model, compile_model(model))


@pytest.fixture(scope="module")
def boosting(data: Data) -> Fitted:
    model = build_estimator(ModelKind.GRADIENT_BOOSTING, seed=3).fit(data.x_train, data.y_train)
    return Fitted(model, compile_model(model))


@pytest.fixture(scope="module")
def boosting_nan(data: Data) -> Fitted:
    """Trained with NaN in two columns, so splits on them learn a missing-value direction from data."""
    model = build_estimator(ModelKind.GRADIENT_BOOSTING, seed=4).set_params(early_stopping=False, max_iter=120)
    model.fit(_with_nans(data.x_train, seed=1, share=0.25), data.y_train)
    return Fitted(model, compile_model(model))


def _assert_parity(fitted: Fitted, x: np.ndarray) -> None:
    expected = fitted.sklearn.predict_proba(x)[:, 1]
    batch = fitted.compiled.score_batch(x)
    one = np.array([fitted.compiled.score_one(row) for row in x.tolist()])
    assert batch.shape == one.shape == (len(x),)
    assert np.max(np.abs(batch - expected)) <= PARITY
    assert np.max(np.abs(one - expected)) <= PARITY
    # The scores must actually vary, else parity would be trivially satisfied by a constant.
    assert expected.std() > 0.01


# ------------------------------------------------------------------------------------------------ parity


def test_logistic_parity(scorecard: Fitted, data: Data) -> None:
    assert isinstance(scorecard.compiled, LogisticScorer)
    assert scorecard.compiled.family == "logistic"
    assert scorecard.compiled.n_features == len(FEATURE_NAMES)
    _assert_parity(scorecard, data.x_eval)


@pytest.mark.parametrize("scaler_args", [{"with_mean": False}, {"with_std": False}, None])
def test_logistic_variants_parity(data: Data, scaler_args: dict[str, bool] | None) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    logit = LogisticRegression(C=0.5, max_iter=3000)
    model = logit if scaler_args is None else make_pipeline(StandardScaler(**scaler_args), logit)
    model.fit(data.x_train[:5000], data.y_train[:5000])
    _assert_parity(Fitted(model, compile_model(model)), data.x_eval[:2000])


def test_tree_parity(boosting: Fitted, data: Data) -> None:
    compiled = boosting.compiled
    assert isinstance(compiled, TreeEnsembleScorer)
    assert compiled.family == "tree_ensemble"
    assert compiled.n_features == len(FEATURE_NAMES)
    assert compiled.n_trees == boosting.sklearn.n_iter_
    assert compiled.is_leaf.sum() == sum(p.get_n_leaf_nodes() for (p,) in boosting.sklearn._predictors)
    _assert_parity(boosting, data.x_eval)


def test_tree_parity_with_missing_values(boosting_nan: Fitted, data: Data) -> None:
    compiled = boosting_nan.compiled
    assert isinstance(compiled, TreeEnsembleScorer)
    splits = ~compiled.is_leaf
    on_nan_columns = splits & np.isin(compiled.feature, NAN_COLUMNS)
    # Both directions occur on the columns that had NaN in training: the parity below covers both branches.
    assert compiled.missing_left[on_nan_columns].any()
    assert not compiled.missing_left[on_nan_columns].all()
    x = _with_nans(data.x_eval, seed=2, share=0.3)
    # NaN also where training never saw one: sklearn sends it to the child that had more samples.
    x[np.random.default_rng(3).random(len(x)) < 0.1, FEATURE_NAMES.index("amount_log")] = np.nan
    assert np.isnan(x).any(axis=1).mean() > 0.4
    _assert_parity(boosting_nan, x)


def test_value_equal_to_a_threshold_goes_left(boosting: Fitted, data: Data) -> None:
    compiled = boosting.compiled
    splits = np.flatnonzero(~compiled.is_leaf & np.isfinite(compiled.threshold))
    rng = np.random.default_rng(7)
    x = data.x_eval[:2000].copy()
    # Put each row's value of one split's feature exactly on that split's threshold.
    chosen = rng.choice(splits, size=len(x))
    x[np.arange(len(x)), compiled.feature[chosen]] = compiled.threshold[chosen]
    _assert_parity(boosting, x)


# ------------------------------------------------------------------------------------------------ properties


@st.composite
def _tree_rows(draw: st.DrawFn) -> list[float]:
    row = features_one(draw(transactions()))
    mask = draw(st.lists(st.booleans(), min_size=len(row), max_size=len(row)))
    return [float("nan") if missing else value for value, missing in zip(row, mask, strict=True)]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tx=transactions())
def test_logistic_one_equals_batch(scorecard: Fitted, tx: dict[str, Any]) -> None:
    row = features_one(tx)
    one = scorecard.compiled.score_one(row)
    batch = scorecard.compiled.score_batch(np.array([row, row]))
    assert isinstance(one, float)
    assert 0.0 <= one <= 1.0
    assert abs(one - batch[0]) <= 1e-12 and batch[0] == batch[1]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_tree_rows(), min_size=1, max_size=5))
def test_tree_one_equals_batch(boosting_nan: Fitted, rows: list[list[float]]) -> None:
    batch = boosting_nan.compiled.score_batch(np.array(rows))
    for i, row in enumerate(rows):
        one = boosting_nan.compiled.score_one(row)
        assert isinstance(one, float)
        assert 0.0 <= one <= 1.0
        assert abs(one - batch[i]) <= 1e-12


# ------------------------------------------------------------------------------------------------ input checks


def test_wrong_width_and_nan_inputs_are_refused(scorecard: Fitted, boosting: Fitted, data: Data) -> None:
    row = data.x_eval[0].tolist()
    for compiled in (scorecard.compiled, boosting.compiled):
        with pytest.raises(ValueError, match="expected 38 features"):
            compiled.score_one(row[:-1])
        with pytest.raises(ValueError, match=r"shape \(n, 38\)"):
            compiled.score_batch(data.x_eval[:3, :-1])
        assert compiled.score_batch(np.empty((0, 38))).shape == (0,)
    with pytest.raises(ValueError, match="NaN"):
        scorecard.compiled.score_one([*row[:-1], float("nan")])
    with pytest.raises(ValueError, match="NaN"):
        scorecard.compiled.score_batch(_with_nans(data.x_eval[:100], seed=1, share=0.5))


def test_extreme_inputs_stay_probabilities(scorecard: Fitted, boosting: Fitted) -> None:
    for value in (1e300, -1e300):
        assert scorecard.compiled.score_one([value] * 38) in (0.0, 1.0)
        assert 0.0 < boosting.compiled.score_one([value] * 38) < 1.0


def test_module_does_not_import_sklearn() -> None:
    code = "import sys, shadowgate.serving.scorer; print(sorted(m for m in sys.modules if m.startswith('sklearn')))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------------------ storage


@pytest.mark.parametrize("which", ["scorecard", "boosting_nan"])
def test_save_load_round_trip_is_bit_identical(
    which: str, request: pytest.FixtureRequest, data: Data, tmp_path: Path
) -> None:
    compiled = request.getfixturevalue(which).compiled
    target = tmp_path / "models" / "v1"
    save_compiled(compiled, target, key=KEY)
    assert sorted(p.name for p in target.iterdir()) == ["arrays.npz", "meta.json"]
    meta = json.loads((target / "meta.json").read_text())
    assert meta["family"] == compiled.family and meta["n_features"] == 38
    assert meta["fingerprint"] == compiled.fingerprint and len(meta["fingerprint"]) == 64
    assert len(meta["hmac"]) == 64 and meta["hmac"] != meta["fingerprint"]
    loaded = load_compiled(target, key=KEY)
    assert type(loaded) is type(compiled)
    assert loaded.fingerprint == compiled.fingerprint
    x = _with_nans(data.x_eval[:2000], seed=5, share=0.2) if which == "boosting_nan" else data.x_eval[:2000]
    assert np.array_equal(loaded.score_batch(x), compiled.score_batch(x))
    assert [loaded.score_one(r) for r in x[:200].tolist()] == [compiled.score_one(r) for r in x[:200].tolist()]
    # The npz holds plain numeric arrays only: loadable with pickle disabled.
    with np.load(target / "arrays.npz", allow_pickle=False) as npz:
        assert all(npz[name].dtype != object for name in npz.files)


def test_save_replaces_an_existing_model_and_leaves_no_temporaries(
    scorecard: Fitted, boosting: Fitted, tmp_path: Path
) -> None:
    target = tmp_path / "v1"
    save_compiled(scorecard.compiled, target, key=KEY)
    save_compiled(boosting.compiled, target, key=KEY)
    assert load_compiled(target, key=KEY).fingerprint == boosting.compiled.fingerprint
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]


def test_corrupt_npz_is_refused(boosting: Fitted, tmp_path: Path) -> None:
    target = tmp_path / "v1"
    save_compiled(boosting.compiled, target, key=KEY)
    npz = target / "arrays.npz"
    raw = bytearray(npz.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 16] = bytes(b ^ 0xFF for b in raw[middle : middle + 16])
    npz.write_bytes(bytes(raw))
    with pytest.raises(ValueError):
        load_compiled(target, key=KEY)
    npz.write_bytes(bytes(raw[: len(raw) // 3]))
    with pytest.raises(ValueError, match="unreadable"):
        load_compiled(target, key=KEY)


def test_tampered_arrays_or_fingerprint_are_refused(boosting: Fitted, tmp_path: Path) -> None:
    target = tmp_path / "v1"
    save_compiled(boosting.compiled, target, key=KEY)
    # A well-formed npz whose leaf values changed: only the fingerprint can tell.
    with np.load(target / "arrays.npz", allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["value"] = arrays["value"] * 1.01
    np.savez(target / "arrays.npz", **arrays)
    with pytest.raises(ValueError, match="fingerprint"):
        load_compiled(target, key=KEY)

    save_compiled(boosting.compiled, target, key=KEY)
    meta = json.loads((target / "meta.json").read_text())
    meta["fingerprint"] = "0" * 64
    (target / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="fingerprint"):
        load_compiled(target, key=KEY)


def test_a_consistent_forgery_fails_the_keyed_check(boosting: Fitted, tmp_path: Path) -> None:
    """Changed arrays with a recomputed bare fingerprint (all a bare hash asks for) are refused by the HMAC."""
    from shadowgate.serving.scorer import _fingerprint

    target = tmp_path / "v1"
    save_compiled(boosting.compiled, target, key=KEY)
    with np.load(target / "arrays.npz", allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["value"] = arrays["value"] * 1.01
    np.savez(target / "arrays.npz", **arrays)
    meta = json.loads((target / "meta.json").read_text())
    meta["fingerprint"] = _fingerprint(meta["family"], meta["n_features"], arrays)
    (target / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="keyed integrity check"):
        load_compiled(target, key=KEY)


def test_another_key_or_another_binding_is_refused(scorecard: Fitted, tmp_path: Path) -> None:
    target = tmp_path / "v1"
    binding = {"model": "bnpl_default", "version": "1", "run_id": "abc"}
    save_compiled(scorecard.compiled, target, key=KEY, binding=binding)
    assert load_compiled(target, key=KEY, binding=binding).fingerprint == scorecard.compiled.fingerprint
    with pytest.raises(ValueError, match="keyed integrity check"):
        load_compiled(target, key=b"another-key", binding=binding)
    # Files signed for version 1 copied where version 2 is expected: genuine, but not what was asked for.
    with pytest.raises(ValueError, match="expected"):
        load_compiled(target, key=KEY, binding={**binding, "version": "2"})
    meta = json.loads((target / "meta.json").read_text())
    meta["binding"]["version"] = "2"  # relabelled without the key
    (target / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="keyed integrity check"):
        load_compiled(target, key=KEY, binding={**binding, "version": "2"})
    with pytest.raises(ValueError, match="non-empty key"):
        save_compiled(scorecard.compiled, tmp_path / "v2", key=b"")


def test_missing_model_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_compiled(tmp_path / "nothing", key=KEY)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="unreadable"):
        load_compiled(tmp_path / "empty", key=KEY)


# ------------------------------------------------------------------------------------------------ unsupported


def _small(data: Data) -> tuple[np.ndarray, np.ndarray]:
    return data.x_train[:2000], data.y_train[:2000]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_unsupported_models_are_refused(data: Data) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor, RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    x, y = _small(data)
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y)
    with pytest.raises(UnsupportedModelError, match="RandomForestClassifier"):
        compile_model(forest)
    with pytest.raises(UnsupportedModelError, match="StandardScaler"):
        compile_model(StandardScaler().fit(x))
    with pytest.raises(UnsupportedModelError, match="HistGradientBoostingRegressor"):
        compile_model(HistGradientBoostingRegressor(max_iter=3).fit(x, y))
    multiclass = HistGradientBoostingClassifier(max_iter=3).fit(x, np.arange(len(x)) % 3)
    with pytest.raises(UnsupportedModelError, match="binary"):
        compile_model(multiclass)
    with pytest.raises(UnsupportedModelError, match="not fitted"):
        compile_model(HistGradientBoostingClassifier())
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(UnsupportedModelError, match="MinMaxScaler"):
        compile_model(make_pipeline(MinMaxScaler(), LogisticRegression()).fit(x, y))
    with pytest.raises(UnsupportedModelError, match="binary"):
        compile_model(LogisticRegression(max_iter=500).fit(x, np.arange(len(x)) % 3))
    with pytest.raises(UnsupportedModelError):
        compile_model(object())
    assert issubclass(UnsupportedModelError, ValueError)


def test_categorical_hgb_is_refused(data: Data) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = _small(data)
    weekday = FEATURE_NAMES.index("weekday")
    model = HistGradientBoostingClassifier(max_iter=5, categorical_features=[weekday]).fit(x, y)
    with pytest.raises(UnsupportedModelError, match="categorical"):
        compile_model(model)
