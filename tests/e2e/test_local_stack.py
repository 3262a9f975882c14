"""The local stack (``make up`` / ``make down``): real Redis, MLflow, Airflow and API processes on private ports.

Every test runs with its own SHADOWGATE_HOME and free ports, so it never touches a developer's running stack.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis

from shadowgate.contract import example_transaction
from shadowgate.local import stack
from shadowgate.registry import ModelRegistry
from tests.e2e.conftest import REPO_ROOT, SMALL_HISTORY, _free_ports

pytestmark = pytest.mark.slow


def _wait_until_gone(pgid: int, timeout_s: float = 20.0) -> list[int]:
    """Members of a process group (zombies included) still present after waiting up to timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        # Leaders are children of this test process: collect their exit status or they stay zombies.
        try:
            while os.waitpid(-pgid, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        left = stack.group_members(pgid, include_zombies=True)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _logged_prediction_ids(redis_port: int, *, timeout_s: float) -> list[str]:
    """Event ids in the stack's predictions stream, once it holds any (the shadow process commits asynchronously)."""
    client = redis.Redis.from_url(f"redis://127.0.0.1:{redis_port}/0", decode_responses=True)
    deadline = time.monotonic() + timeout_s
    try:
        while not (entries := client.xrange("shadowgate:predictions")) and time.monotonic() < deadline:
            time.sleep(0.2)
        return [fields["id"] for _, fields in entries]
    finally:
        client.close()


def _registered_versions(tracking_uri: str) -> list[str]:
    from mlflow import MlflowClient

    found = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).search_model_versions(
        "name = 'bnpl_default'"
    )
    return sorted(str(v.version) for v in found)


def test_up_bootstraps_serves_model_decisions_is_idempotent_and_down_leaves_nothing(
    private_stack: dict[str, int], stack_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = stack_home
    for variable, value in SMALL_HISTORY.items():
        monkeypatch.setenv(variable, value)
    # A pid file left behind by a crashed run (its process is long gone) must not confuse `up`.
    crashed = subprocess.Popen(["true"])
    crashed.wait()
    (home / "run").mkdir(parents=True)
    (home / "run" / f"{stack.MLFLOW}.pid").write_text(f"{crashed.pid}\n")

    assert stack.api_is_built(REPO_ROOT)
    expected = {stack.REDIS, stack.POSTGRES, stack.MLFLOW, *stack.AIRFLOW_COMPONENTS, stack.API}
    recorded: dict[str, int] = {}
    try:
        started = time.monotonic()
        first = stack.up(repo_root=REPO_ROOT)
        print(f"up (with bootstrap) → healthy in {time.monotonic() - started:.1f} s")
        recorded.update(first.pids)
        print(first.render())

        assert first.healthy
        assert set(first.pids) == expected
        assert first.pids[stack.MLFLOW] != crashed.pid

        # Redis: a real server on the private port, AOF on, files below SHADOWGATE_HOME.
        client = redis.Redis.from_url(f"redis://127.0.0.1:{private_stack['redis']}/0")
        try:
            assert client.ping()
            assert client.config_get("appendonly")["appendonly"] == "yes"
            assert Path(str(client.config_get("dir")["dir"])) == (home / "redis").resolve()
        finally:
            client.close()

        # MLflow: /health answers, the store is the SQLite file below SHADOWGATE_HOME.
        assert httpx.get(f"http://127.0.0.1:{private_stack['mlflow']}/health", timeout=5).status_code == 200
        assert (home / "mlflow" / "mlflow.db").exists()

        # PostgreSQL: Airflow's metadata is in a real server of the stack (its own port, password logins only).
        import psycopg

        from shadowgate.local import postgres

        password = (home / "secrets" / "postgres_password").read_text().strip()
        with psycopg.connect(postgres.conninfo(private_stack["postgres"], password, "airflow")) as connection:
            tables = {row[0] for row in connection.execute("SELECT tablename FROM pg_tables").fetchall()}
        assert {"dag_run", "backfill", "task_instance"} <= tables
        assert not postgres.answering(private_stack["postgres"], "not-the-password")
        assert not list(home.glob("airflow/*.db"))  # no SQLite metadata any more
        airflow_env = home / "run" / "airflow.env"
        assert stat.S_IMODE(airflow_env.stat().st_mode) == 0o600  # it holds the database password
        assert f"postgresql+psycopg://postgres:{password}@127.0.0.1:{private_stack['postgres']}/airflow" in (
            airflow_env.read_text()
        )

        # Airflow: every component healthy, and the printed credentials really log in.
        airflow = f"http://127.0.0.1:{private_stack['airflow']}"
        health = httpx.get(f"{airflow}/api/v2/monitor/health", timeout=5).json()
        assert {k: health[k]["status"] for k in ("metadatabase", "scheduler", "dag_processor", "triggerer")} == {
            "metadatabase": "healthy",
            "scheduler": "healthy",
            "dag_processor": "healthy",
            "triggerer": "healthy",
        }
        assert first.airflow_user == "admin"
        assert first.airflow_password
        token = httpx.post(
            f"{airflow}/auth/token",
            json={"username": first.airflow_user, "password": first.airflow_password},
            timeout=10,
        )
        assert token.status_code in (200, 201), token.text
        assert token.json()["access_token"]

        # Alerts reach the run that raised them: a task writes the run's note through the REST API with the account
        # make up configured for tasks (read here from the same airflow.env the tasks get).
        from shadowgate.config import AirflowSettings
        from shadowgate.local.airflow_rest import AirflowRest
        from shadowgate.pipelines.run_notes import note_alerts

        task_env = dict(
            line.split("=", 1) for line in airflow_env.read_text().splitlines() if line and not line.startswith("#")
        )
        settings = AirflowSettings(
            api_url=task_env["SHADOWGATE_AIRFLOW_API_URL"],
            api_password_file=Path(task_env["SHADOWGATE_AIRFLOW_API_PASSWORD_FILE"]),
        )
        alert = {"cohort": "2026-W36", "label": "final", "severity": "error", "title": "t", "text": "next: x"}
        with AirflowRest(airflow, username="admin", password=first.airflow_password) as rest:
            rest.wait_for_dag("upload_predictions")
            run_id = rest.trigger("upload_predictions")
            note = note_alerts(
                {"alerts_raised": [alert]}, dag_id="upload_predictions", run_id=run_id, settings=settings
            )
            assert note is not None
            [run] = [r for r in rest.runs("upload_predictions") if r["dag_run_id"] == run_id]
            assert run["note"] == note and "**ERROR** [2026-W36 final] t: next: x" in note

        # Bootstrap: history seeded under the home, both aliases registered, and the API decides with the champion.
        assert sorted(p.name for p in (home / "data").glob("*.parquet")) == [
            "labels.parquet",
            "outcomes.parquet",
            "transactions.parquet",
        ]
        mlflow_url = f"http://127.0.0.1:{private_stack['mlflow']}"
        aliases = ModelRegistry(tracking_uri=mlflow_url, model_name="bnpl_default").aliases()
        assert set(aliases) == {"champion", "challenger"}
        assert sorted(aliases.values()) == _registered_versions(mlflow_url) == ["1", "2"]
        api = f"http://127.0.0.1:{private_stack['api']}"
        assert httpx.get(f"{api}/health/live", timeout=5).status_code == 200
        assert httpx.get(f"{api}/docs", timeout=5).status_code == 200
        ready = httpx.get(f"{api}/health/ready", timeout=5)
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"  # the details need the admin key
        served = httpx.get(f"{api}/v1/models", timeout=5).json()
        assert {alias: m["version"] for alias, m in served["aliases"].items()} == aliases
        decision = httpx.post(f"{api}/v1/bnpl/risk-assessment", json=example_transaction(), timeout=10)
        assert decision.status_code == 200, decision.text
        body = decision.json()
        assert (body["model"], body["fallback"]) == ({"alias": "champion", "version": aliases["champion"]}, False)
        assert 0.0 <= body["risk_score"] <= 1.0
        # ...and its event reaches the stack's Redis through the API's shadow process.
        assert _logged_prediction_ids(private_stack["redis"], timeout_s=30.0) == [body["request_id"]]

        # stack.env carries the effective URLs for every process and task.
        env = dict(
            line.split("=", 1)
            for line in (home / "run" / "stack.env").read_text().splitlines()
            if line and not line.startswith("#")
        )
        assert env["SHADOWGATE_REDIS_URL"] == f"redis://127.0.0.1:{private_stack['redis']}/0"
        assert env["SHADOWGATE_MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{private_stack['mlflow']}"
        assert Path(env["SHADOWGATE_HOME"]) == home.resolve()
        assert json.loads((home / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())["admin"]

        # Idempotent: a second `up` adopts every running group instead of starting new ones, and its bootstrap
        # keeps the history and the aliases (no new model version).
        second = stack.up(repo_root=REPO_ROOT)
        assert second.pids == first.pids
        assert second.healthy
        assert ModelRegistry(tracking_uri=mlflow_url, model_name="bnpl_default").aliases() == aliases
        assert _registered_versions(mlflow_url) == ["1", "2"]
        assert stack.status(repo_root=REPO_ROOT).pids == first.pids

        # A crashed component (its whole group gone, pid file stale) is restarted alone; the others are kept.
        crashed_pgid = first.pids[stack.AIRFLOW_SCHEDULER]
        os.killpg(crashed_pgid, signal.SIGKILL)
        assert _wait_until_gone(crashed_pgid) == []
        assert stack.status(repo_root=REPO_ROOT)[stack.AIRFLOW_SCHEDULER].state == "stopped"
        third = stack.up(repo_root=REPO_ROOT, bootstrap=False)
        recorded.update({f"{stack.AIRFLOW_SCHEDULER} (restarted)": third.pids[stack.AIRFLOW_SCHEDULER]})
        assert third.healthy
        assert third.pids[stack.AIRFLOW_SCHEDULER] != crashed_pgid
        assert {k: v for k, v in third.pids.items() if k != stack.AIRFLOW_SCHEDULER} == {
            k: v for k, v in first.pids.items() if k != stack.AIRFLOW_SCHEDULER
        }
    finally:
        capsys.readouterr()
        stopped = stack.down(repo_root=REPO_ROOT)
        said = capsys.readouterr().out
        print(said)

    assert set(stopped) == set(third.pids)
    assert "SIGKILL" not in said  # every component stopped on its own clean-stop signal within the grace period
    for name, pgid in recorded.items():
        assert stack.group_members(pgid) == [], f"{name}: live processes of group {pgid} after down"
        assert _wait_until_gone(pgid) == [], f"{name}: group {pgid} still has (zombie) processes"
    for service, port in private_stack.items():
        assert stack.port_is_free(port), f"{service} port {port} still taken after down"
    assert not list((home / "run").glob("*.pid"))

    # Nothing running: down is harmless and status says so.
    assert stack.down(repo_root=REPO_ROOT) == []
    after = stack.status(repo_root=REPO_ROOT)
    assert after.pids == {}
    assert not after[stack.MLFLOW].healthy


def test_a_taken_port_is_a_clear_error_and_starts_nothing(private_stack: dict[str, int], stack_home: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", private_stack["mlflow"]))
        squatter.listen()
        with pytest.raises(stack.PortInUseError, match=rf"port {private_stack['mlflow']} \(for mlflow\)"):
            stack.up(repo_root=REPO_ROOT, bootstrap=False)
    assert not list((stack_home / "run").glob("*.pid"))
    assert stack.down(repo_root=REPO_ROOT) == []


def test_an_external_redis_is_only_checked(
    private_stack: dict[str, int], stack_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nobody = f"redis://127.0.0.1:{_free_ports(1)[0]}/0"
    monkeypatch.setenv("SHADOWGATE_REDIS_URL", nobody)
    with pytest.raises(stack.StackError, match="does not answer PING"):
        stack.up(repo_root=REPO_ROOT, bootstrap=False)
    assert not list((stack_home / "run").glob("*.pid"))
    state = stack.status(repo_root=REPO_ROOT)
    assert (state[stack.REDIS].state, state[stack.REDIS].url, state[stack.REDIS].healthy) == ("external", nobody, False)
    assert stack.down(repo_root=REPO_ROOT) == []


def test_airflow_components_ignore_the_callers_airflow_variables(
    private_stack: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test session's (or another installation's) AIRFLOW_* variables must not reach the stack's Airflow: the DAG
    tests' unit-test mode leaked into a stack once and every task died on "Invalid auth token"."""
    monkeypatch.setenv("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
    monkeypatch.setenv("AIRFLOW_HOME", "/somewhere/else")
    env = stack.Layout.resolve(REPO_ROOT).airflow_process_env()
    assert "AIRFLOW__CORE__UNIT_TEST_MODE" not in env
    assert env["AIRFLOW_HOME"] == str(stack.Layout.resolve(REPO_ROOT).airflow_home)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
