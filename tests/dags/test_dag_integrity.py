"""Every DAG imports cleanly and follows the project's rules (astro-style integrity checks)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.dags.conftest import DAGS_FOLDER, dag_bag

APPROVED_TAGS = {"shadowgate", "training", "warehouse", "evaluation", "monitoring", "promotion"}
DAG_FILES = sorted(p for p in DAGS_FOLDER.glob("*.py") if not p.name.startswith("_"))
SHARED_MODULES = sorted((DAGS_FOLDER / "common").glob("*.py"))
HEAVY_MODULES = {"mlflow", "evidently", "pandas", "numpy", "sklearn", "google", "duckdb", "redis", "shadowgate"}


@pytest.fixture(scope="module")
def dagbag(airflow_db: Path):  # type: ignore[no-untyped-def]
    return dag_bag()


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


def test_every_task_shares_the_default_args_and_the_failure_alert(dagbag) -> None:  # type: ignore[no-untyped-def]
    import common.defaults

    assert Path(common.defaults.__file__).parent == DAGS_FOLDER / "common"  # no installed "common" shadows ours
    shared = common.defaults.DEFAULT_ARGS
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            where = f"{dag_id}.{task.task_id}"
            assert task.on_failure_callback == [common.defaults.alert_on_failure], where
            assert (task.retries, task.retry_delay, task.retry_exponential_backoff, task.max_retry_delay) == (
                shared["retries"],
                shared["retry_delay"],
                shared["retry_exponential_backoff"],
                shared["max_retry_delay"],
            ), where


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_default_args_are_not_written_in_a_dag_file(path: Path) -> None:
    """One copy (dags/common/defaults.py): a DAG file passes it, it does not spell out its own."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "default_args":
            assert isinstance(node.value, ast.Name) and node.value.id == "DEFAULT_ARGS", path.name
        if isinstance(node, ast.FunctionDef):
            assert "failure" not in node.name, f"{path.name} defines its own failure callback {node.name}"


def test_the_shared_package_is_not_parsed_for_dags() -> None:
    """.airflowignore keeps the dag-processor out of dags/common, whatever its files contain (safe mode off)."""
    from airflow.utils.file import list_py_file_paths

    listed = sorted(Path(p) for p in list_py_file_paths(str(DAGS_FOLDER), safe_mode=False))
    assert listed == DAG_FILES
    assert SHARED_MODULES  # there is something to ignore


@pytest.mark.parametrize("path", DAG_FILES + SHARED_MODULES, ids=lambda p: p.name)
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
