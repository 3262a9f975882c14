"""Compiled scorers: the two model families evaluated without sklearn on the request path.

sklearn's per-call overhead (0.7-1.7 ms for one row) dwarfs the arithmetic of our models, so serving does not call
sklearn. :func:`compile_model` reads a fitted model's parameters once (importing sklearn lazily) into a few flat
arrays; the compiled objects evaluate them with plain Python (logistic, one row) or numpy (everything else):

* **logistic** — the scaler is folded into the weights, so a score is one dot product and a sigmoid.
* **tree_ensemble** — every tree of a ``HistGradientBoostingClassifier`` is flattened into shared node arrays and
  all trees are walked together, one level per step, vectorised over trees (and over rows for a batch). Missing
  values follow sklearn exactly: NaN goes the ``missing_go_to_left`` way, anything else goes left when
  ``x <= threshold``.

:func:`save_compiled` / :func:`load_compiled` keep a compiled model as ``arrays.npz`` + ``meta.json`` (no pickle
anywhere). The meta file holds a SHA-256 fingerprint of the arrays (corruption) and an HMAC-SHA256, keyed with a local
secret, over the fingerprint and what the files claim to be (``binding``: model, version, run): whoever can write the
cache folder but not read the key cannot make a changed or swapped model pass, as they could with a bare hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import operator
import os
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

LOGISTIC = "logistic"
TREE_ENSEMBLE = "tree_ensemble"
FORMAT_VERSION = 2
"""Version of the on-disk layout; bump it when the arrays or their meaning change.

1. arrays + a bare SHA-256 fingerprint.
2. + the binding (what the files are) and an HMAC-SHA256 over the metadata."""

_ARRAYS_FILE = "arrays.npz"
_META_FILE = "meta.json"
_BATCH_CHUNK_ROWS = 128
"""Rows per block in :meth:`TreeEnsembleScorer.score_batch`: keeps the (trees × rows) work arrays in cache (measured:
64-256 rows run at ~19 µs/row for 300 trees, 512 and more at 40+)."""


class UnsupportedModelError(ValueError):
    """The object is not a model family the compiler understands (or uses a feature it does not implement)."""


@runtime_checkable
class CompiledModel(Protocol):
    """A model compiled for the hot path: immutable, numpy-only, scores in ``FEATURE_NAMES`` order."""

    @property
    def family(self) -> str:
        """``"logistic"`` or ``"tree_ensemble"``."""
        ...

    @property
    def n_features(self) -> int:
        """Number of inputs per row."""
        ...

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of everything that determines the scores."""
        ...

    def score_one(self, x: Sequence[float]) -> float:
        """P(default) of one row."""
        ...

    def score_batch(self, x: np.ndarray) -> np.ndarray:
        """P(default) of each row of an ``(n, n_features)`` matrix, as an ``(n,)`` float64 array."""
        ...

    def arrays(self) -> dict[str, np.ndarray]:
        """The parameters as named arrays (what :func:`save_compiled` writes)."""
        ...


def _expit(z: float) -> float:
    # Two branches so that exp never overflows (math.exp raises instead of returning inf).
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _expit_array(z: np.ndarray) -> np.ndarray:
    # The same two branches as _expit, so score_one and score_batch agree to the last bits.
    e = np.exp(-np.abs(z))
    out: np.ndarray = np.where(z >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))
    return out


def _frozen(a: Any, dtype: Any) -> np.ndarray:
    out = np.array(a, dtype=dtype, copy=True, order="C")
    out.setflags(write=False)
    return out


def _fingerprint(family: str, n_features: int, arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the family, the width and every array's name, dtype, shape and bytes (in name order)."""
    digest = hashlib.sha256(f"shadowgate-compiled/{FORMAT_VERSION}/{family}/{n_features}".encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"|{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def _as_matrix(x: np.ndarray, n_features: int) -> np.ndarray:
    matrix = np.ascontiguousarray(x, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != n_features:
        raise ValueError(f"expected a matrix of shape (n, {n_features}), got shape {matrix.shape}")
    return matrix


# ------------------------------------------------------------------------------------------------ logistic


@dataclass(frozen=True, eq=False)
class LogisticScorer:
    """A logistic model with any standardisation folded in: ``P = expit(bias + weights · x)``.

    Attributes:
        weights: ``(n_features,)`` float64 coefficients on the raw (unscaled) features.
        bias: intercept on the raw features.
    """

    weights: np.ndarray
    bias: float
    _w: tuple[float, ...] = field(init=False, repr=False)
    _fingerprint: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        weights = _frozen(self.weights, np.float64)
        if weights.ndim != 1 or weights.size == 0:
            raise ValueError(f"weights must be a non-empty vector, got shape {weights.shape}")
        if not (np.isfinite(weights).all() and math.isfinite(self.bias)):
            raise ValueError("logistic weights and bias must be finite")
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "bias", float(self.bias))
        # Python floats: the one-row path is a plain-Python dot product, faster than numpy for ~40 inputs.
        object.__setattr__(self, "_w", tuple(weights.tolist()))
        object.__setattr__(self, "_fingerprint", _fingerprint(self.family, self.n_features, self.arrays()))

    @property
    def family(self) -> str:
        return LOGISTIC

    @property
    def n_features(self) -> int:
        return len(self._w)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights, "bias": np.array([self.bias], dtype=np.float64)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> LogisticScorer:
        bias = np.asarray(arrays["bias"], dtype=np.float64)
        if bias.shape != (1,):
            raise ValueError(f"bias must have shape (1,), got {bias.shape}")
        return cls(weights=arrays["weights"], bias=float(bias[0]))

    def score_one(self, x: Sequence[float]) -> float:
        """P(default) of one row.

        Args:
            x: ``n_features`` values in ``FEATURE_NAMES`` order.

        Raises:
            ValueError: wrong length, or a NaN input (sklearn's logistic regression refuses NaN too).
        """
        if len(x) != len(self._w):
            raise ValueError(f"expected {len(self._w)} features, got {len(x)}")
        z = self.bias + sum(map(operator.mul, self._w, x))
        if z != z:  # NaN anywhere in x makes z NaN: one check instead of one per input
            raise ValueError("input contains NaN (or infinities that cancel); the logistic model has no missing values")
        return _expit(z)

    def score_batch(self, x: np.ndarray) -> np.ndarray:
        """P(default) of each row of an ``(n, n_features)`` matrix.

        Raises:
            ValueError: wrong shape, or a NaN input.
        """
        z = _as_matrix(x, self.n_features) @ self.weights + self.bias
        if np.isnan(z).any():
            raise ValueError("input contains NaN; the logistic model has no missing-value handling")
        return _expit_array(z)


# ------------------------------------------------------------------------------------------------ trees


@dataclass(frozen=True, eq=False)
class TreeEnsembleScorer:
    """Binary gradient-boosted trees: ``P = expit(baseline + Σ leaf value of each tree)``.

    All trees share one set of node arrays (global node indices). A leaf points to itself, so a walk that has reached
    a leaf stays there and every tree can be stepped the same number of times.

    Attributes:
        n_inputs: number of input features.
        roots: ``(n_trees,)`` index of each tree's root node.
        feature: ``(n_nodes,)`` feature tested at each split node (0 at leaves).
        threshold: ``(n_nodes,)`` split threshold: a value goes left when ``x <= threshold``.
        missing_left: ``(n_nodes,)`` whether NaN goes left.
        left, right: ``(n_nodes,)`` children (the node itself at leaves).
        is_leaf: ``(n_nodes,)``.
        value: ``(n_nodes,)`` leaf values (learning rate already applied, as sklearn stores them).
        baseline: the raw score before any tree.
    """

    n_inputs: int
    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    is_leaf: np.ndarray
    value: np.ndarray
    baseline: float
    _levels: tuple[int, ...] = field(init=False, repr=False)
    _feat2: np.ndarray = field(init=False, repr=False)
    _thr2: np.ndarray = field(init=False, repr=False)
    _child2: np.ndarray = field(init=False, repr=False)
    _fingerprint: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        roots = _frozen(self.roots, np.int64)
        feature = _frozen(self.feature, np.int64)
        threshold = _frozen(self.threshold, np.float64)
        missing_left = _frozen(self.missing_left, np.bool_)
        left = _frozen(self.left, np.int64)
        right = _frozen(self.right, np.int64)
        is_leaf = _frozen(self.is_leaf, np.bool_)
        value = _frozen(self.value, np.float64)
        n_nodes = value.shape[0] if value.ndim == 1 else -1
        if self.n_inputs <= 0 or n_nodes <= 0 or roots.ndim != 1 or roots.size == 0:
            raise ValueError("a tree ensemble needs inputs, nodes and at least one tree")
        for name, a in (("feature", feature), ("threshold", threshold), ("missing_left", missing_left)):
            if a.shape != (n_nodes,):
                raise ValueError(f"{name} must have shape ({n_nodes},), got {a.shape}")
        for name, a in (("left", left), ("right", right), ("is_leaf", is_leaf)):
            if a.shape != (n_nodes,):
                raise ValueError(f"{name} must have shape ({n_nodes},), got {a.shape}")
        if not math.isfinite(self.baseline) or not np.isfinite(value).all():
            raise ValueError("baseline and leaf values must be finite")
        for name, a in (("roots", roots), ("left", left), ("right", right)):
            if a.min() < 0 or a.max() >= n_nodes:
                raise ValueError(f"{name} points outside the {n_nodes} nodes")
        splits = ~is_leaf
        if splits.any() and (feature[splits].min() < 0 or feature[splits].max() >= self.n_inputs):
            raise ValueError(f"a split tests a feature outside 0..{self.n_inputs - 1}")
        if np.isnan(threshold[splits]).any():
            raise ValueError("a split has a NaN threshold")
        nodes = np.arange(n_nodes)
        if not ((left[is_leaf] == nodes[is_leaf]).all() and (right[is_leaf] == nodes[is_leaf]).all()):
            raise ValueError("leaves must point to themselves")
        depths = _tree_depths(roots, left, right, is_leaf)

        # Deepest trees first: at level k only the trees deeper than k still move, and they form a prefix, so each
        # step works on a contiguous slice instead of on every tree.
        order = np.argsort(-depths, kind="stable")
        roots = _frozen(roots[order], np.int64)
        sorted_depths = depths[order]
        levels = tuple(int((sorted_depths > k).sum()) for k in range(int(sorted_depths.max())))

        # Evaluation arrays, indexed by the "position" p = 2 * node:
        # - NaN handling without a per-node branch: the row is extended to 2·F values, the second half with NaN
        #   replaced by -inf. A node whose NaN goes left reads the second half (-inf <= any threshold: left); the
        #   others read the first half (NaN <= t is False: right). Non-missing values are identical in both halves.
        # - child2[p + go_left] is the next position: [2·right, 2·left] per node, so one gather chooses the branch.
        feat = np.where(is_leaf, 0, feature + self.n_inputs * missing_left.astype(np.int64))
        feat2 = _frozen(np.repeat(feat, 2), np.intp)
        thr2 = _frozen(np.repeat(np.where(is_leaf, 0.0, threshold), 2), np.float64)
        child2 = _frozen(np.column_stack((2 * right, 2 * left)).ravel(), np.intp)

        for name, a in (
            ("roots", roots),
            ("feature", feature),
            ("threshold", threshold),
            ("missing_left", missing_left),
            ("left", left),
            ("right", right),
            ("is_leaf", is_leaf),
            ("value", value),
            ("_feat2", feat2),
            ("_thr2", thr2),
            ("_child2", child2),
        ):
            object.__setattr__(self, name, a)
        object.__setattr__(self, "baseline", float(self.baseline))
        object.__setattr__(self, "_levels", levels)
        object.__setattr__(self, "_fingerprint", _fingerprint(self.family, self.n_features, self.arrays()))

    @property
    def family(self) -> str:
        return TREE_ENSEMBLE

    @property
    def n_features(self) -> int:
        return self.n_inputs

    @property
    def n_trees(self) -> int:
        return int(self.roots.shape[0])

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "roots": self.roots,
            "feature": self.feature,
            "threshold": self.threshold,
            "missing_left": self.missing_left,
            "left": self.left,
            "right": self.right,
            "is_leaf": self.is_leaf,
            "value": self.value,
            "baseline": np.array([self.baseline], dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, n_features: int, arrays: Mapping[str, np.ndarray]) -> TreeEnsembleScorer:
        baseline = np.asarray(arrays["baseline"], dtype=np.float64)
        if baseline.shape != (1,):
            raise ValueError(f"baseline must have shape (1,), got {baseline.shape}")
        return cls(
            n_inputs=n_features,
            roots=arrays["roots"],
            feature=arrays["feature"],
            threshold=arrays["threshold"],
            missing_left=arrays["missing_left"],
            left=arrays["left"],
            right=arrays["right"],
            is_leaf=arrays["is_leaf"],
            value=arrays["value"],
            baseline=float(baseline[0]),
        )

    def score_one(self, x: Sequence[float]) -> float:
        """P(default) of one row (NaN allowed: it follows each split's missing-value direction).

        Args:
            x: ``n_features`` values in ``FEATURE_NAMES`` order.

        Raises:
            ValueError: wrong length.
        """
        row = np.asarray(x, dtype=np.float64)
        if row.shape != (self.n_inputs,):
            raise ValueError(f"expected {self.n_inputs} features, got shape {row.shape}")
        # fmax ignores NaN, so fmax(x, -inf) is x with NaN replaced by -inf (see __post_init__).
        extended = np.concatenate((row, np.fmax(row, -np.inf)))
        feat2, thr2, child2 = self._feat2, self._thr2, self._child2
        # Fancy indexing rather than .take(): measurably cheaper per call on these ~300-element arrays.
        pos = 2 * self.roots
        for n in self._levels:
            active = pos[:n]
            pos[:n] = child2[active + (extended[feat2[active]] <= thr2[active])]
        raw = self.baseline + float(self.value[pos >> 1].sum())
        return _expit(raw)

    def score_batch(self, x: np.ndarray) -> np.ndarray:
        """P(default) of each row of an ``(n, n_features)`` matrix (NaN allowed).

        Raises:
            ValueError: wrong shape.
        """
        matrix = _as_matrix(x, self.n_inputs)
        out = np.empty(matrix.shape[0], dtype=np.float64)
        for start in range(0, matrix.shape[0], _BATCH_CHUNK_ROWS):
            block = matrix[start : start + _BATCH_CHUNK_ROWS]
            out[start : start + block.shape[0]] = self._raw_block(block)
        return _expit_array(out)

    def _raw_block(self, block: np.ndarray) -> np.ndarray:
        n_rows = block.shape[0]
        width = 2 * self.n_inputs
        # Row r's extended values live at [r·width, (r+1)·width) of one flat vector.
        extended = np.concatenate((block, np.fmax(block, -np.inf)), axis=1).ravel()
        offsets = np.arange(n_rows, dtype=np.intp) * width
        feat2, thr2, child2 = self._feat2, self._thr2, self._child2
        # (trees, rows): a tree's positions for all rows are contiguous, so the active prefix of trees is a view.
        pos = np.repeat((2 * self.roots)[:, None], n_rows, axis=1)
        for n in self._levels:
            active = pos[:n]
            pos[:n] = child2[active + (extended[feat2[active] + offsets] <= thr2[active])]
        raw: np.ndarray = self.baseline + self.value[pos >> 1].sum(axis=0)
        return raw


def _tree_depths(roots: np.ndarray, left: np.ndarray, right: np.ndarray, is_leaf: np.ndarray) -> np.ndarray:
    """Depth of each tree (0 for a lone leaf); refuses node graphs that are not trees reachable from the roots."""
    n_nodes = left.shape[0]
    # Python lists: this walks every node once, element access on lists is much cheaper than on arrays.
    leaf, lefts, rights = is_leaf.tolist(), left.tolist(), right.tolist()
    depths = np.zeros(roots.shape[0], dtype=np.int64)
    for t, root in enumerate(roots.tolist()):
        frontier = [root]
        depth = 0
        seen = 0
        while True:
            splits = [node for node in frontier if not leaf[node]]
            if not splits:
                break
            seen += len(splits)
            if seen > n_nodes:  # more split visits than nodes: a cycle
                raise ValueError(f"tree {t} is not a tree (cycle in the node graph)")
            frontier = [child for node in splits for child in (lefts[node], rights[node])]
            depth += 1
        depths[t] = depth
    return depths


# ------------------------------------------------------------------------------------------------ compile


def compile_model(model: Any) -> CompiledModel:
    """Compile a fitted sklearn model for the hot path.

    Supported: a binary ``LogisticRegression``, alone or as ``Pipeline([StandardScaler, LogisticRegression])``; a
    binary ``HistGradientBoostingClassifier`` without categorical features.

    Args:
        model: the fitted estimator.

    Returns:
        A :class:`LogisticScorer` or :class:`TreeEnsembleScorer` whose ``score_batch`` equals ``predict_proba[:, 1]``
        (to about 1e-15).

    Raises:
        UnsupportedModelError: any other estimator, an unfitted one, multiclass, or categorical splits.
    """
    # Imported here: serving from a cache must not need sklearn at all.
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if isinstance(model, HistGradientBoostingClassifier):
        return _compile_hgb(model)
    if isinstance(model, LogisticRegression):
        return _compile_logistic(None, model)
    if isinstance(model, Pipeline):
        steps = [step for _, step in model.steps if step is not None and step != "passthrough"]
        if len(steps) == 2 and isinstance(steps[0], StandardScaler) and isinstance(steps[1], LogisticRegression):
            return _compile_logistic(steps[0], steps[1])
        kinds = [type(step).__name__ for step in steps]
        raise UnsupportedModelError(f"unsupported pipeline {kinds}: only [StandardScaler, LogisticRegression]")
    raise UnsupportedModelError(
        f"cannot compile a {type(model).__module__}.{type(model).__qualname__}: supported are "
        "Pipeline([StandardScaler, LogisticRegression]), LogisticRegression and HistGradientBoostingClassifier"
    )


def _compile_logistic(scaler: Any, logit: Any) -> LogisticScorer:
    if not hasattr(logit, "coef_"):
        raise UnsupportedModelError("the LogisticRegression is not fitted")
    coef = np.asarray(logit.coef_, dtype=np.float64)
    if len(logit.classes_) != 2 or coef.shape[0] != 1:
        raise UnsupportedModelError(f"only binary logistic regression is supported, got {len(logit.classes_)} classes")
    w = coef[0]
    b = float(np.asarray(logit.intercept_, dtype=np.float64).reshape(-1)[0])
    if scaler is not None:
        if not hasattr(scaler, "n_features_in_"):
            raise UnsupportedModelError("the StandardScaler is not fitted")
        if scaler.n_features_in_ != w.shape[0]:
            raise UnsupportedModelError(f"scaler has {scaler.n_features_in_} inputs, the logit {w.shape[0]}")
        # (x - mean) / scale · w + b  ==  x · (w / scale) + (b - Σ w·mean/scale). The flags, not the attributes,
        # say what transform() applies: with_mean=False still stores mean_ (it is needed for the variance).
        scale = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else np.ones_like(w)
        mean = np.asarray(scaler.mean_, dtype=np.float64) if scaler.with_mean else np.zeros_like(w)
        w = w / scale
        b = b - float(np.sum(w * mean))
    return LogisticScorer(weights=w, bias=b)


def _compile_hgb(model: Any) -> TreeEnsembleScorer:
    if not hasattr(model, "_predictors"):
        raise UnsupportedModelError("the HistGradientBoostingClassifier is not fitted")
    if len(model.classes_) != 2 or model.n_trees_per_iteration_ != 1:
        raise UnsupportedModelError(f"only binary classifiers are supported, got {len(model.classes_)} classes")
    if type(model._loss).__name__ != "HalfBinomialLoss":
        raise UnsupportedModelError(f"unsupported loss {type(model._loss).__name__} (expected the binomial log loss)")
    if model.is_categorical_ is not None and bool(np.any(model.is_categorical_)):
        raise UnsupportedModelError("categorical features are not supported (one-hot encode them instead)")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("feature", "threshold", "missing_left", "left", "right")}
    parts |= {"is_leaf": [], "value": []}
    roots: list[int] = []
    offset = 0
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        if bool(np.any(nodes["is_categorical"])):
            raise UnsupportedModelError("a tree has categorical splits, which are not supported")
        leaf = nodes["is_leaf"].astype(bool)
        own = np.arange(offset, offset + nodes.shape[0], dtype=np.int64)
        parts["feature"].append(np.where(leaf, 0, nodes["feature_idx"]).astype(np.int64))
        parts["threshold"].append(nodes["num_threshold"].astype(np.float64))
        parts["missing_left"].append(nodes["missing_go_to_left"].astype(bool))
        parts["left"].append(np.where(leaf, own, nodes["left"].astype(np.int64) + offset))
        parts["right"].append(np.where(leaf, own, nodes["right"].astype(np.int64) + offset))
        parts["is_leaf"].append(leaf)
        parts["value"].append(np.where(leaf, nodes["value"], 0.0).astype(np.float64))
        roots.append(offset)  # sklearn's root is node 0 of each tree
        offset += nodes.shape[0]
    if not roots:
        raise UnsupportedModelError("the model has no trees")
    return TreeEnsembleScorer(
        n_inputs=int(model.n_features_in_),
        roots=np.array(roots, dtype=np.int64),
        baseline=float(np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)[0]),
        **{k: np.concatenate(v) for k, v in parts.items()},
    )


# ------------------------------------------------------------------------------------------------ storage


def _mac(meta: Mapping[str, Any], key: bytes) -> str:
    """HMAC-SHA256 of the metadata (every field but the MAC itself), canonical JSON."""
    if not key:
        raise ValueError("the compiled-model cache needs a non-empty key")
    signed = {k: v for k, v in meta.items() if k != "hmac"}
    message = json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def save_compiled(
    model: CompiledModel, directory: Path, *, key: bytes, binding: Mapping[str, str] | None = None
) -> None:
    """Write a compiled model to ``directory`` (``arrays.npz`` + ``meta.json``), atomically, signed with ``key``.

    The files are written to a temporary sibling directory, flushed, and renamed into place, so a reader sees either
    no model or a complete one. An existing directory is replaced (moved aside, then removed).

    Args:
        model: a compiled model.
        directory: the target directory (its parent is created if needed).
        key: the secret HMAC key (:func:`load_compiled` needs the same).
        binding: what these files are (e.g. model name, version, run id); signed, and checked by the reader.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    arrays = model.arrays()
    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "family": model.family,
        "n_features": model.n_features,
        "fingerprint": _fingerprint(model.family, model.n_features, arrays),
        "arrays": sorted(arrays),
        "binding": dict(binding or {}),
    }
    meta["hmac"] = _mac(meta, key)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        with open(tmp / _ARRAYS_FILE, "wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        with open(tmp / _META_FILE, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        if directory.exists():
            # A directory cannot be renamed over a non-empty one: swap via an aside name (a reader racing this
            # sees the old model, briefly nothing, or the new model, never a mix).
            aside = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex}"
            directory.rename(aside)
            tmp.rename(directory)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            tmp.rename(directory)
        _fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_dir(path: Path) -> None:
    # Makes the rename durable; not possible on every platform, and a missed fsync only risks a re-fetch.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_compiled(directory: Path, *, key: bytes, binding: Mapping[str, str] | None = None) -> CompiledModel:
    """Read a model written by :func:`save_compiled` and verify its fingerprint, its HMAC and its binding.

    Args:
        directory: the directory given to :func:`save_compiled`.
        key: the key it was signed with.
        binding: what the files must be (as given to :func:`save_compiled`).

    Raises:
        FileNotFoundError: ``directory`` does not exist (nothing cached).
        ValueError: the files are missing, unreadable or inconsistent, do not match the recorded fingerprint, fail
            the keyed check (tampered, or signed with another key), or are bound to another model.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no compiled model at {directory}")
    try:
        meta = json.loads((directory / _META_FILE).read_text(encoding="utf-8"))
        with np.load(directory / _ARRAYS_FILE, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"unreadable compiled model at {directory}: {error}") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"compiled model at {directory} has an unknown format (expected {FORMAT_VERSION})")
    family, n_features, recorded = meta.get("family"), meta.get("n_features"), meta.get("fingerprint")
    if not isinstance(family, str) or not isinstance(n_features, int) or not isinstance(recorded, str):
        raise ValueError(f"compiled model at {directory} has incomplete metadata")
    actual = _fingerprint(family, n_features, arrays)
    if actual != recorded:
        raise ValueError(f"compiled model at {directory} fails its fingerprint check (corrupt or tampered)")
    mac = meta.get("hmac")
    if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(meta, key)):
        raise ValueError(f"compiled model at {directory} fails its keyed integrity check (tampered, or another key)")
    if meta.get("binding") != dict(binding or {}):
        raise ValueError(f"compiled model at {directory} is {meta.get('binding')}, expected {dict(binding or {})}")
    try:
        if family == LOGISTIC:
            model: CompiledModel = LogisticScorer.from_arrays(arrays)
        elif family == TREE_ENSEMBLE:
            model = TreeEnsembleScorer.from_arrays(n_features, arrays)
        else:
            raise ValueError(f"unknown model family {family!r}")
    except KeyError as error:
        raise ValueError(f"compiled model at {directory} lacks array {error}") from error
    except TypeError as error:
        raise ValueError(f"compiled model at {directory} has malformed arrays: {error}") from error
    if model.n_features != n_features:
        raise ValueError(f"compiled model at {directory} has {model.n_features} inputs, meta says {n_features}")
    return model
