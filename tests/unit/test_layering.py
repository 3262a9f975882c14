"""The package's layering, read from the source with ``ast``: who may import whom.

* ``decisioning`` (policies, the experiment book, model-artifact trust) is shared by every part, so it imports none
  of them: not serving, evaluation, pipelines, training or storage.
* ``evaluation``, ``pipelines``, ``training`` and ``storage`` import nothing from ``serving`` (the request path).
* ``shadowgate`` imports neither airflow nor fastapi.
* No module imports another part's private names (``from shadowgate.x.y import _helper``, or a private module):
  a part is a subpackage of ``shadowgate`` (or a root module such as ``config``), ``api`` or ``dags``.

Every import counts, wherever it is written: module level, inside a function, under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "include" / "shadowgate"

FORBIDDEN: dict[str, frozenset[str]] = {
    "decisioning": frozenset({"serving", "evaluation", "pipelines", "training", "storage"}),
    "evaluation": frozenset({"serving"}),
    "pipelines": frozenset({"serving"}),
    "training": frozenset({"serving"}),
    "storage": frozenset({"serving"}),
}
"""Part of ``shadowgate`` → the parts of ``shadowgate`` it must not import."""

ORCHESTRATION = frozenset({"airflow", "fastapi"})


@dataclass(frozen=True)
class Imported:
    """One name an import statement brings in.

    Attributes:
        target: the full dotted name (``shadowgate.serving.policies.decide`` for ``from … import decide``).
        private: whether a component after the top-level package is a private name (``_x``, not a dunder).
        line: where the statement is.
    """

    target: str
    private: bool
    line: int


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(module: str, *, is_package: bool, level: int, name: str | None) -> str:
    # A relative import is resolved against the importing module's package, as Python does.
    parts = module.split(".") if is_package else module.split(".")[:-1]
    base = parts[: len(parts) - (level - 1)] if level > 1 else parts
    return ".".join([*base, *([name] if name else [])])


def imports_of(source: str, *, module: str, is_package: bool = False) -> Iterator[Imported]:
    """Every name imported anywhere in ``source`` (the code of ``module``), with its full dotted target."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                yield Imported(alias.name, any(_is_private(p) for p in parts[1:]), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            origin = (
                _resolve(module, is_package=is_package, level=node.level, name=node.module)
                if node.level
                else str(node.module)
            )
            for alias in node.names:
                parts = [*origin.split("."), alias.name]
                yield Imported(".".join(parts), any(_is_private(p) for p in parts[1:]), node.lineno)


def part_of(name: str) -> str:
    """The part a dotted name belongs to: ``shadowgate.<sub>`` for the domain package, else its top-level name."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "shadowgate" else parts[0]


def violations(source: str, *, module: str, is_package: bool = False) -> list[str]:
    """The layering rules ``module`` (whose code is ``source``) breaks, one line each (empty when none)."""
    found: list[str] = []
    own = part_of(module)
    sub = own.split(".")[1] if own.startswith("shadowgate.") else None
    for imp in imports_of(source, module=module, is_package=is_package):
        top = imp.target.split(".")[0]
        where = f"{module}:{imp.line} imports {imp.target}"
        if own.startswith("shadowgate") and top in ORCHESTRATION:
            found.append(f"{where}: shadowgate never imports {top}")
        if top == "shadowgate" and sub is not None:
            imported_part = part_of(imp.target).removeprefix("shadowgate.")
            if imported_part in FORBIDDEN.get(sub, frozenset()):
                found.append(f"{where}: {sub} must not import {imported_part}")
        if top == "shadowgate" and imp.private and part_of(imp.target) != own:
            found.append(f"{where}: a private name of another part")
    return found


def _modules(root: Path, prefix: str) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("").parts
        dotted = ".".join([prefix, *rel]).removesuffix(".__init__")
        yield dotted, path


def _all_modules() -> list[tuple[str, Path]]:
    found = list(_modules(PACKAGE_DIR, "shadowgate"))
    for top in ("api", "dags"):
        found.extend(_modules(ROOT / top, top))
    return found


def test_the_scan_covers_the_whole_package() -> None:
    names = {name for name, _ in _all_modules()}
    # A wrong root would make the rules pass vacuously.
    assert {
        "shadowgate",
        "shadowgate.decisioning.policies",
        "shadowgate.decisioning.experiments",
        "shadowgate.decisioning.model_trust",
        "shadowgate.storage.experiment_store",
        "shadowgate.serving.runtime",
        "shadowgate.pipelines.performance",
        "api.main",
    } <= names
    assert len([n for n in names if n.startswith("shadowgate")]) >= 60


def test_every_module_keeps_the_layering() -> None:
    broken = [
        line
        for name, path in _all_modules()
        for line in violations(path.read_text(encoding="utf-8"), module=name, is_package=path.name == "__init__.py")
    ]
    assert broken == []


def test_evidently_is_imported_by_the_drift_module_only() -> None:
    """The architecture's rule: ``shadowgate.evaluation.drift`` is the one Evidently import (its report); the
    decision is the package's own statistics."""
    importers = sorted(
        name
        for name, path in _all_modules()
        for imp in imports_of(path.read_text(encoding="utf-8"), module=name, is_package=path.name == "__init__.py")
        if imp.target.split(".")[0] == "evidently"
    )
    assert set(importers) == {"shadowgate.evaluation.drift"}


def test_the_old_serving_paths_are_gone() -> None:
    # No compatibility shims: what moved out of serving cannot be imported from there any more.
    serving = PACKAGE_DIR / "serving"
    assert not (serving / "policies.py").exists()
    assert not (serving / "experiments.py").exists()
    assert not (serving / "experiment_store.py").exists()
    assert not (serving / "config").exists()
    for old in ("policies", "experiments", "experiment_store"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"shadowgate.serving.{old}")
    # serving's loader uses the trust rules through their module, so it re-exports none of them.
    loader = importlib.import_module("shadowgate.serving.artifacts")
    assert not {"REVIEWED_TYPES", "RefusalReason", "ModelRefusedError", "artifact_metadata"} & set(vars(loader))


# --- the checker itself fails on violations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        (
            "shadowgate.decisioning.policies",
            "from shadowgate.serving.scorer import compile_model\n",
            "shadowgate.decisioning.policies:1 imports shadowgate.serving.scorer.compile_model: "
            "decisioning must not import serving",
        ),
        (
            "shadowgate.decisioning.experiments",
            "def f():\n    import shadowgate.storage.experiment_store\n",
            "shadowgate.decisioning.experiments:2 imports shadowgate.storage.experiment_store: "
            "decisioning must not import storage",
        ),
        (
            "shadowgate.decisioning.policies",
            "from shadowgate import evaluation\n",
            "shadowgate.decisioning.policies:1 imports shadowgate.evaluation: decisioning must not import evaluation",
        ),
        (
            "shadowgate.evaluation.performance",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from shadowgate.serving.models import X\n",
            "shadowgate.evaluation.performance:3 imports shadowgate.serving.models.X: "
            "evaluation must not import serving",
        ),
        (
            "shadowgate.pipelines.performance",
            "from ..serving import runtime\n",
            "shadowgate.pipelines.performance:1 imports shadowgate.serving.runtime: pipelines must not import serving",
        ),
        (
            "shadowgate.training.train",
            "import shadowgate.serving.artifacts as a\n",
            "shadowgate.training.train:1 imports shadowgate.serving.artifacts: training must not import serving",
        ),
        (
            "shadowgate.storage.duckdb",
            "import fastapi\n",
            "shadowgate.storage.duckdb:1 imports fastapi: shadowgate never imports fastapi",
        ),
        (
            "shadowgate.cli",
            "def f():\n    from airflow.sdk import dag\n",
            "shadowgate.cli:2 imports airflow.sdk.dag: shadowgate never imports airflow",
        ),
        (
            "shadowgate.pipelines.upload",
            "from shadowgate.storage.redis_streams import _helper\n",
            "shadowgate.pipelines.upload:1 imports shadowgate.storage.redis_streams._helper: "
            "a private name of another part",
        ),
        (
            "api.routes.admin",
            "from shadowgate.serving._impl import thing\n",
            "api.routes.admin:1 imports shadowgate.serving._impl.thing: a private name of another part",
        ),
        (
            "dags.weekly_performance",
            "import shadowgate.pipelines._private\n",
            "dags.weekly_performance:1 imports shadowgate.pipelines._private: a private name of another part",
        ),
    ],
)
def test_a_violation_is_reported(module: str, source: str, expected: str) -> None:
    assert violations(source, module=module) == [expected]


def test_allowed_imports_are_not_reported() -> None:
    source = (
        "from __future__ import annotations\n"
        "from shadowgate.decisioning.policies import _internal\n"  # a private name within its own part
        "from shadowgate.features import FEATURE_NAMES\n"
        "from shadowgate import __version__\n"  # dunders are not private
        "import fastapi_like\n"
    )
    assert violations(source, module="shadowgate.decisioning.experiments") == []
    # serving may use decisioning and storage; api may use fastapi and public serving names.
    assert violations("from shadowgate.decisioning.policies import decide\n", module="shadowgate.serving.service") == []
    assert violations("import fastapi\nfrom shadowgate.serving.runtime import Runtime\n", module="api.main") == []


def test_relative_imports_resolve_like_python() -> None:
    assert [i.target for i in imports_of("from . import x\n", module="shadowgate.serving", is_package=True)] == [
        "shadowgate.serving.x"
    ]
    assert [i.target for i in imports_of("from .x import y\n", module="shadowgate.serving.service")] == [
        "shadowgate.serving.x.y"
    ]
    assert [i.target for i in imports_of("from ..storage import z\n", module="shadowgate.serving.service")] == [
        "shadowgate.storage.z"
    ]
