"""Every DAG imports cleanly and follows the project's rules (astro-style integrity checks)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.dags.conftest import DAGS_FOLDER

APPROVED_TAGS = {"shadowgate", "training", "warehouse", "evaluation", "monitoring", "promotion"}
DAG_FILES = sorted(p for p in DAGS_FOLDER.glob("*.py") if not p.name.startswith("_"))
HEAVY_MODULES = {"mlflow", "evidently", "pandas", "numpy", "sklearn", "google", "duckdb", "redis", "shadowgate"}


@pytest.fixture(scope="module")
def dagbag(airflow_db: Path):  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_no_import_errors(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert dagbag.import_errors == {}
    assert len(dagbag.dags) == len(DAG_FILES) >= 1


def test_file_name_is_dag_id(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert sorted(dagbag.dags) == sorted(p.stem for p in DAG_FILES)


def test_dags_follow_the_rules(dagbag) -> None:  # type: ignore[no-untyped-def]
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags and set(dag.tags) <= APPROVED_TAGS, dag_id
        assert "shadowgate" in dag.tags, dag_id
        assert dag.doc_md and dag.doc_md.strip().startswith(f"### {dag_id}"), dag_id
        assert dag.catchup is False or dag.timetable.can_be_scheduled, dag_id
        for task in dag.tasks:
            assert task.retries >= 2, f"{dag_id}.{task.task_id}"
            assert task.owner == "shadowgate", f"{dag_id}.{task.task_id} owner {task.owner!r}"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_no_heavy_imports_at_module_level(path: Path) -> None:
    """DAG files are parsed every few seconds: heavy libraries and the domain package load inside tasks only."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in HEAVY_MODULES, f"{path.name} imports {name} at module level"
