"""An isolated Airflow metadata DB for DAG tests (a temp AIRFLOW_HOME, SQLite, no examples), the DAG folder loaded
the way Airflow loads it, and a webhook that records the alerts it receives."""

from __future__ import annotations

import http.server
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

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


def dag_bag() -> Any:
    """The DAG folder parsed as the dag-processor and the task runner parse it: a ``BundleDagBag``, which puts the
    folder on ``sys.path`` (so DAG files import the shared ``common`` package) and honours ``.airflowignore``."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(DAGS_FOLDER), bundle_path=DAGS_FOLDER)


def load_dag(dag_id: str) -> Any:
    dag = dag_bag().get_dag(dag_id)
    assert dag is not None, dag_id
    return dag


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An alert webhook on 127.0.0.1: its URL and the JSON bodies it received."""
    _Hook.received = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", _Hook.received
    finally:
        server.shutdown()
        server.server_close()
