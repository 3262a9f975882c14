"""Model-artifact trust: what an artifact must be for shadowgate to run it (skops, reviewed types, the features).

Whoever can write to the registry chooses what the API loads, so loading is where trust is decided:

* **skops only.** An MLflow ``sklearn`` flavor serialised with pickle or cloudpickle runs arbitrary code when
  loaded; it is refused without being opened. So is an artifact that ships code (``code_paths``: MLflow would put
  it on ``sys.path``) or that has no ``sklearn`` flavor.
* **Our reviewed types, not the artifact's.** MLflow loads a skops file trusting the type list written in the
  artifact's own ``MLmodel``; here every type named anywhere in the file must be in :data:`REVIEWED_TYPES` — the
  exact sklearn / numpy types the project's two model families are made of — before ``skops.io.load`` runs with
  that list. skops' own default trust set is wider (any sklearn estimator); the walk over the file refuses those
  too.
* **The contract's features.** The estimator must have been fitted on :data:`~shadowgate.features.FEATURE_NAMES`
  (its ``feature_names_in_``), and the artifact's metadata must name :data:`~shadowgate.features.FEATURE_SET`.

Training writes artifacts that pass (:func:`checked_skops_types`, :func:`artifact_metadata`); serving loads them
under these rules (``shadowgate.serving.artifacts.load_trusted_model``), and anything that must judge a model (the
promotion gate) reads the same rules here. Nothing here imports mlflow: the files are read directly.
"""

from __future__ import annotations

import io
import json
import zipfile
from enum import StrEnum
from pathlib import Path
from typing import Any

from shadowgate.features import FEATURE_NAMES, FEATURE_SET

SKLEARN_FLAVOR = "sklearn"
SKOPS = "skops"

REVIEWED_TYPES: frozenset[str] = frozenset(
    {
        # containers and scalars inside the estimators' state
        "builtins.dict",
        "builtins.list",
        "builtins.str",
        "builtins.tuple",
        "numpy.float64",
        "numpy.ndarray",
        "numpy.uint64",
        "numpy.random._generator.Generator",
        # the scorecard: Pipeline([StandardScaler, LogisticRegression])
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.linear_model._logistic.LogisticRegression",
        # gradient boosting: HistGradientBoostingClassifier, its trees, binning, loss and label encoder
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss._loss.CyHalfBinomialLoss",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.Interval",
        "sklearn.preprocessing._label.LabelEncoder",
    }
)
"""Every type a model artifact may contain: what the two families (``shadowgate.training.train.build_estimator``)
are made of with scikit-learn 1.9, nothing more. A test holds this list to exactly the union of both families'
types, so a library upgrade that changes them fails until the new types are reviewed here."""

REVIEWED_LOADERS: frozenset[str] = frozenset(
    {
        "CachedNode",
        "DictNode",
        "JsonNode",
        "ListNode",
        "LossNode",
        "NdArrayNode",
        "ObjectNode",
        "RandomGeneratorNode",
        "TupleNode",
        "TypeNode",
    }
)
"""skops node kinds (how an object is rebuilt) our artifacts use; ``FunctionNode``, ``MethodNode``,
``OperatorFuncNode`` and the like (a callable in the file) are refused."""


class RefusalReason(StrEnum):
    """Why a model was refused (a label of ``shadowgate_model_loads_refused_total``)."""

    FORMAT = "format"
    """The sklearn flavor is serialised with pickle, cloudpickle or anything but skops."""
    FLAVOR = "flavor"
    """The artifact has no ``sklearn`` flavor (another flavor, a pyfunc ``python_model``, no MLmodel)."""
    CODE = "code"
    """The artifact ships code (``code_paths``)."""
    UNTRUSTED_TYPES = "untrusted_types"
    """The skops file names a type (or node kind) outside the reviewed list."""
    FEATURES = "feature_set"
    """The model's feature names, or the artifact's feature set id, differ from the contract's."""
    UNSUPPORTED = "unsupported_model"
    """A model the hot-path compiler does not handle."""
    MALFORMED = "malformed"
    """The artifact is incomplete or unreadable (missing file, bad zip, a path leaving the artifact)."""
    CACHE_INTEGRITY = "cache_integrity"
    """A compiled model on disk fails its keyed integrity check (tampered, corrupt, or another key)."""


class ModelRefusedError(Exception):
    """A model artifact (or cached compiled model) that must not be served.

    Attributes:
        reason: the machine-readable reason (a metric label).
        detail: what exactly was wrong.
    """

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def artifact_metadata() -> dict[str, Any]:
    """The metadata training writes into every model's ``MLmodel`` (checked at load)."""
    return {"feature_names": list(FEATURE_NAMES), "feature_set": FEATURE_SET}


# ------------------------------------------------------------------------------------------------ types


def _schema(source: Path | bytes) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ModelRefusedError(RefusalReason.MALFORMED, f"not a readable skops file: {error}") from error
    if not isinstance(schema, dict):
        raise ModelRefusedError(RefusalReason.MALFORMED, "the skops schema is not an object")
    return schema


def skops_types(source: Path | bytes) -> tuple[set[str], set[str]]:
    """(types, node kinds) named anywhere in a skops file's schema, read without constructing anything.

    Every node of the schema carries ``__module__`` and ``__class__``; walking all of them gives every type the
    file could make skops import or build.
    """
    types: set[str] = set()
    loaders: set[str] = set()
    stack: list[Any] = [_schema(source)]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__class__" in node or "__module__" in node or "__loader__" in node:
                types.add(f"{node.get('__module__')}.{node.get('__class__')}")
                loaders.add(str(node.get("__loader__")))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return types, loaders


def check_reviewed(source: Path | bytes) -> None:
    """Refuse a skops file naming any type or node kind outside the reviewed lists.

    Two audits must both pass: a walk over every node of the file (against :data:`REVIEWED_TYPES` alone), and
    skops' own ``get_untrusted_types`` (its default trust set, which must leave nothing we have not reviewed).

    Raises:
        ModelRefusedError: ``untrusted_types`` (or ``malformed`` for a file that is not skops).
    """
    import skops.io

    types, loaders = skops_types(source)
    unexpected = sorted(types - REVIEWED_TYPES) + sorted(f"<{name}>" for name in loaders - REVIEWED_LOADERS)
    try:
        untrusted = skops.io.get_untrusted_types(
            **({"data": source} if isinstance(source, bytes) else {"file": source})
        )
    except Exception as error:  # skops refuses some malformed trees while auditing them
        raise ModelRefusedError(RefusalReason.MALFORMED, f"skops could not audit the file: {error}") from error
    unexpected += sorted(set(untrusted) - REVIEWED_TYPES - set(unexpected))
    if unexpected:
        raise ModelRefusedError(RefusalReason.UNTRUSTED_TYPES, f"types not reviewed for loading: {unexpected}")


def checked_skops_types(model: Any) -> list[str]:
    """For training: refuse a model made of unreviewed types; return what MLflow's ``skops_trusted_types`` needs.

    Raises:
        ModelRefusedError: ``untrusted_types``.
    """
    import skops.io

    data = skops.io.dumps(model)
    check_reviewed(data)
    return sorted(skops.io.get_untrusted_types(data=data))


# ------------------------------------------------------------------------------------------------ MLmodel and features


def check_mlmodel(mlmodel: Any) -> dict[str, Any]:
    """Refuse an ``MLmodel`` (already parsed) whose sklearn flavor is not skops, that ships code, or has no flavor.

    Returns:
        the sklearn flavor's configuration.

    Raises:
        ModelRefusedError: ``malformed`` (no flavors), ``flavor`` (no sklearn flavor), ``format`` (not skops),
            ``code`` (ships code).
    """
    if not isinstance(mlmodel, dict) or not isinstance(mlmodel.get("flavors"), dict):
        raise ModelRefusedError(RefusalReason.MALFORMED, "MLmodel has no flavors")
    flavors = mlmodel["flavors"]
    flavor = flavors.get(SKLEARN_FLAVOR)
    if not isinstance(flavor, dict):
        raise ModelRefusedError(RefusalReason.FLAVOR, f"no sklearn flavor (flavors: {sorted(map(str, flavors))})")
    serialization = flavor.get("serialization_format")
    if serialization != SKOPS:
        raise ModelRefusedError(RefusalReason.FORMAT, f"serialization {serialization!r} is not skops")
    shipped = [name for name, conf in flavors.items() if isinstance(conf, dict) and conf.get("code")]
    if shipped:
        raise ModelRefusedError(RefusalReason.CODE, f"the artifact ships code (code_paths of {sorted(shipped)})")
    return flavor


def check_features(model: Any, mlmodel: dict[str, Any]) -> None:
    """Refuse a model not fitted on the contract's features, or whose artifact names another feature set.

    Raises:
        ModelRefusedError: ``feature_set``.
    """
    metadata = mlmodel.get("metadata") if isinstance(mlmodel.get("metadata"), dict) else {}
    recorded = metadata.get("feature_set") if metadata else None
    if recorded != FEATURE_SET:
        raise ModelRefusedError(RefusalReason.FEATURES, f"feature set {recorded!r}, the contract's is {FEATURE_SET!r}")
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        raise ModelRefusedError(RefusalReason.FEATURES, "the model was fitted without feature names")
    fitted = tuple(str(name) for name in names)
    if fitted != FEATURE_NAMES:
        missing = [n for n in FEATURE_NAMES if n not in fitted]
        extra = [n for n in fitted if n not in FEATURE_NAMES]
        where = f"missing {missing[:5]}, unexpected {extra[:5]}" if missing or extra else "a different order"
        raise ModelRefusedError(RefusalReason.FEATURES, f"fitted on other features than the contract's ({where})")
