"""Loading a model artifact on the request path, under the trust rules of :mod:`shadowgate.decisioning.model_trust`.

The rules (skops only, no shipped code, reviewed types, the contract's features) are decided there; this module reads
an MLflow model directory from disk and builds the estimator only once every rule has passed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The module, not its names: the rules stay importable from one place only (no second path through serving).
from shadowgate.decisioning import model_trust as trust


def _within(root: Path, relative: object, what: str) -> Path:
    if not isinstance(relative, str) or not relative:
        raise trust.ModelRefusedError(trust.RefusalReason.MALFORMED, f"{what} is not a relative path: {relative!r}")
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise trust.ModelRefusedError(
            trust.RefusalReason.MALFORMED, f"{what} {relative!r} is not a file inside the artifact"
        )
    return path


def read_mlmodel(model_dir: Path) -> dict[str, Any]:
    """The artifact's ``MLmodel`` (YAML, read safely: no tags, no objects), checked by the trust rules.

    Raises:
        ModelRefusedError: ``malformed`` (missing or unreadable), ``flavor`` (no sklearn flavor), ``format`` (not
            skops), ``code`` (ships code).
    """
    import yaml

    try:
        mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise trust.ModelRefusedError(trust.RefusalReason.MALFORMED, f"no readable MLmodel: {error}") from error
    trust.check_mlmodel(mlmodel)
    return mlmodel


def load_trusted_model(model_dir: Path) -> Any:
    """Load the sklearn estimator of an MLflow model directory, trusting only what the trust rules allow.

    Reads ``MLmodel`` (safe YAML), checks format, code and the skops file's types, then runs ``skops.io.load`` with
    the reviewed types — never MLflow's loader, never the artifact's own trusted list, never its code — and checks
    the features.

    Raises:
        ModelRefusedError: for anything the trust rules do not allow.
    """
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    mlmodel = read_mlmodel(model_dir)
    path = _within(model_dir, mlmodel["flavors"][trust.SKLEARN_FLAVOR].get("pickled_model"), "pickled_model")
    trust.check_reviewed(path)
    try:
        model = skops.io.load(path, trusted=sorted(trust.REVIEWED_TYPES))
    except UntrustedTypesFoundException as error:
        raise trust.ModelRefusedError(
            trust.RefusalReason.UNTRUSTED_TYPES, f"skops refused the file: {error}"
        ) from error
    except Exception as error:  # anything else skops fails on is not served either
        raise trust.ModelRefusedError(
            trust.RefusalReason.MALFORMED, f"skops could not load the file: {error}"
        ) from error
    trust.check_features(model, mlmodel)
    return model
