"""An isolated Airflow metadata DB for DAG tests (a temp AIRFLOW_HOME, SQLite, no examples)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    """Point Airflow at a throw-away home and create its metadata DB (once per session: the first is slow)."""
    home = Path(tempfile.mkdtemp(prefix="sg-airflow-"))
    saved = dict(os.environ)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        }
    )
    from airflow.utils import db

    db.resetdb()
    yield home
    os.environ.clear()
    os.environ.update(saved)
