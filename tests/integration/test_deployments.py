"""Only a gate moves the champion, and every alias move is recorded: real MLflow store (SQLite), real DuckDB.

The command-line tests run the real `shadowgate bootstrap` / `train` / `record-deployments` on one bootstrapped
store (module fixture: two trainings); each compares the state before and after its own command, so their order does
not matter. The registry tests use versions without artifacts (the registry's rules need none).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from shadowgate.cli import app
from shadowgate.config import WarehouseSettings
from shadowgate.events import DeploymentEvent
from shadowgate.registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    AliasMoveRefusedError,
    DeploymentNotRecordedError,
    ModelRegistry,
)
from shadowgate.simulation import SimulationResult, write_parquet
from shadowgate.storage.deployments import WarehouseDeploymentLog
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import default_sql_dir
from tests.conftest import SMALL

MODEL = "bnpl_default"
REASON = "INC-4711: the promoted version mis-scores new merchants; back to the previous champion"


def _rows(duckdb_path: Path) -> list[dict[str, Any]]:
    with DuckDBWarehouse(duckdb_path, sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()
        rows = warehouse.query(
            "SELECT event_id, action, alias, from_version, to_version, reason, actor, "
            "CAST(evidence AS VARCHAR) AS evidence FROM shadowgate.deployment_events ORDER BY occurred_at"
        ).to_pylist()
    return [{**row, "evidence": None if row["evidence"] is None else json.loads(row["evidence"])} for row in rows]


# ---------------------------------------------------------------------------------------------- the command line


@dataclass(frozen=True)
class Stack:
    tracking_uri: str
    duckdb_path: Path
    data_dir: Path
    bootstrap_output: str

    def registry(self) -> ModelRegistry:
        return ModelRegistry(tracking_uri=self.tracking_uri, model_name=MODEL)

    def versions(self) -> int:
        return len(
            MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri).search_model_versions(
                f"name = '{MODEL}'"
            )
        )


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, baseline: SimulationResult) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("deployments")
    write_parquet(baseline, root / "home" / "data")
    with pytest.MonkeyPatch.context() as env:
        env.chdir(root)  # a sqlite store keeps artifacts in ./mlruns
        env.setenv("SHADOWGATE_HOME", str(root / "home"))
        env.setenv("SHADOWGATE_MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        env.setenv("SHADOWGATE_TRAIN_REFERENCE_ROWS", "200")
        for key, value in SMALL.items():
            env.setenv(f"SHADOWGATE_SIM_{key.upper()}", str(value))
        result = _invoke("bootstrap")
        assert result.exit_code == 0, result.output
        yield Stack(
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
            duckdb_path=WarehouseSettings().resolved_duckdb_path(root / "home"),
            data_dir=root / "home" / "data",
            bootstrap_output=result.output,
        )


def test_bootstrap_is_the_first_deployment_with_one_row_per_alias(stack: Stack) -> None:
    assert "history: already present" in stack.bootstrap_output
    registry = stack.registry()
    champion, challenger = registry.version(CHAMPION), registry.version(CHALLENGER)
    assert champion is not None and challenger is not None
    rows = [r for r in _rows(stack.duckdb_path) if r["actor"].startswith("shadowgate bootstrap")]
    assert [(r["action"], r["alias"], r["from_version"], r["to_version"]) for r in rows] == [
        ("first_deployment", CHAMPION, None, "1"),
        ("assign", CHALLENGER, None, "2"),
    ]
    assert champion.tags["alias.champion.action"] == "first_deployment"
    assert champion.tags["alias.champion.from_version"] == ""
    assert champion.tags["alias.champion.actor"].startswith("shadowgate bootstrap (")
    assert DeploymentEvent.model_validate_json(champion.tags["alias.champion.event"]).event_id == rows[0]["event_id"]
    before = _rows(stack.duckdb_path)
    again = _invoke("bootstrap")  # aliases set: nothing trained; the recorded moves are re-sent and stored once
    assert again.exit_code == 0, again.output
    assert _rows(stack.duckdb_path) == before


def test_train_moves_the_challenger_and_never_the_champion(stack: Stack) -> None:
    registry = stack.registry()
    champion = registry.version(CHAMPION)
    old_challenger = registry.version(CHALLENGER)
    before = _rows(stack.duckdb_path)
    result = _invoke("train", "--data", str(stack.data_dir), "--actor", "alice@laptop")
    assert result.exit_code == 0, result.output
    new_challenger = registry.version(CHALLENGER)
    assert new_challenger is not None and old_challenger is not None and champion is not None
    assert int(new_challenger.version) == stack.versions()  # the version just registered
    assert f"@{CHALLENGER}" in result.output and f"version {new_challenger.version}" in result.output
    run_id = new_challenger.run_id
    assert registry.version(CHAMPION) == champion  # same version, same tags: untouched
    added = _rows(stack.duckdb_path)[len(before) :]
    assert [(r["action"], r["alias"], r["from_version"], r["to_version"], r["actor"]) for r in added] == [
        ("assign", CHALLENGER, old_challenger.version, new_challenger.version, "alice@laptop")
    ]
    evidence = added[0]["evidence"]
    assert (evidence["source"], evidence["kind"], evidence["run_id"]) == ("training", "hist_gradient_boosting", run_id)
    assert 0.5 < evidence["valid_metrics"]["auc"] < 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--alias", "champion"], "@champion is already set"),
        (["--force-champion"], "No such option: --force-champion"),
    ],
)
def test_training_never_moves_a_set_champion(stack: Stack, args: list[str], message: str) -> None:
    registry = stack.registry()
    aliases, versions, rows = registry.aliases(), stack.versions(), len(_rows(stack.duckdb_path))
    result = _invoke("train", "--data", str(stack.data_dir), *args)
    assert result.exit_code in (1, 2), result.output
    assert message in result.output
    assert (registry.aliases(), stack.versions(), len(_rows(stack.duckdb_path))) == (aliases, versions, rows)


def test_rollback_from_the_command_line_restores_previous_with_its_reason(stack: Stack) -> None:
    log = WarehouseDeploymentLog(lambda: DuckDBWarehouse(stack.duckdb_path, sql_dir=default_sql_dir()))
    registry = ModelRegistry(tracking_uri=stack.tracking_uri, model_name=MODEL, deployments=log)
    old, challenger = registry.version(CHAMPION), registry.version(CHALLENGER)
    assert old is not None and challenger is not None and old.version != challenger.version
    early = _invoke("rollback", "--reason", REASON)
    assert early.exit_code == 1 and "no earlier champion" in early.output  # nothing to roll back to yet
    registry.promote_champion(
        challenger.version, reason="gate passed", actor="airflow:promote_challenger", evidence={"verdict": "superior"}
    )
    before = _rows(stack.duckdb_path)
    short = _invoke("rollback", "--reason", "bad")
    assert short.exit_code == 1 and "at least 20 characters" in short.output
    result = _invoke("rollback", "--reason", REASON)
    assert result.exit_code == 0, result.output
    assert f"@champion: {challenger.version} → {old.version}" in result.output
    assert f"@previous: {old.version} → (removed)" in result.output
    assert registry.version(CHAMPION).version == old.version  # type: ignore[union-attr]
    assert registry.version(PREVIOUS) is None
    added = _rows(stack.duckdb_path)[len(before) :]
    assert [(r["action"], r["alias"], r["from_version"], r["to_version"], r["reason"]) for r in added] == [
        ("rollback", CHAMPION, challenger.version, old.version, REASON),
        ("rollback", PREVIOUS, old.version, None, f"restored as champion by a rollback: {REASON}"),
    ]
    # Put the stack back as the other tests expect it (champion = old, challenger set).
    registry.move_alias(CHALLENGER, challenger.version, reason="back", actor="test", action="assign")


# ---------------------------------------------------------------------------------------------- the registry


class BrokenLog:
    """A warehouse that is down."""

    def record(self, event: DeploymentEvent) -> None:
        raise ConnectionError("warehouse unreachable")


@dataclass(frozen=True)
class Store:
    """A registered model of its own with versions 1-4 (no artifacts: alias rules need none) and a DuckDB file."""

    uri: str
    model_name: str
    duckdb_path: Path


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"  # one store: creating one takes seconds


@pytest.fixture
def store(tracking_uri: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    name = f"model_{request.node.name.removeprefix('test_')[:40]}"
    client.create_registered_model(name)
    source = tmp_path / "artifact"
    source.mkdir()
    for _ in range(4):
        client.create_model_version(name, source=str(source))
    return Store(uri=tracking_uri, model_name=name, duckdb_path=tmp_path / "warehouse.duckdb")


def _registry(store: Store, log: Any = None) -> ModelRegistry:
    deployments = log or WarehouseDeploymentLog(lambda: DuckDBWarehouse(store.duckdb_path, sql_dir=default_sql_dir()))
    return ModelRegistry(tracking_uri=store.uri, model_name=store.model_name, deployments=deployments)


def test_the_champion_rules(store: Store) -> None:
    registry = _registry(store)
    with pytest.raises(AliasMoveRefusedError, match="not moved by training"):
        registry.move_alias(CHAMPION, "1", reason="trained", actor="t", action="assign")
    registry.move_alias(CHAMPION, "1", reason="first model", actor="bootstrap", action="first_deployment")
    with pytest.raises(AliasMoveRefusedError, match="already set"):
        registry.move_alias(CHAMPION, "2", reason="first model", actor="bootstrap", action="first_deployment")
    with pytest.raises(AliasMoveRefusedError, match="no longer allowed"):
        registry.move_alias(CHAMPION, "2", reason=REASON, actor="ops", action="force_champion")
    with pytest.raises(AliasMoveRefusedError, match="needs an actor"):
        registry.move_alias(CHAMPION, "2", reason=REASON, actor=" ", action="promote")
    with pytest.raises(AliasMoveRefusedError, match="no longer allowed"):
        registry.move_alias(CHALLENGER, "2", reason=REASON, actor="ops", action="force_champion")
    with pytest.raises(AliasMoveRefusedError, match="needs the gate's evidence"):
        registry.promote_champion("2", reason="gate passed", actor="gate", evidence={})
    assert registry.aliases() == {CHAMPION: "1"}
    assert len(_rows(store.duckdb_path)) == 1
    with pytest.raises(ValueError, match="without a deployment log"):
        ModelRegistry(tracking_uri=store.uri, model_name=store.model_name).move_alias(
            CHALLENGER, "2", reason="r", actor="a", action="assign"
        )


def test_the_gate_moves_champion_and_previous_with_one_row_each(store: Store) -> None:
    registry = _registry(store)
    registry.move_alias(CHAMPION, "1", reason="first model", actor="bootstrap", action="first_deployment")
    evidence = {"delong_p": 0.004, "auc_delta": 0.011}
    events = registry.promote_champion("3", reason="challenger wins on 41,000 matured", actor="gate", evidence=evidence)
    assert [(e.alias, e.from_version, e.to_version, e.action) for e in events] == [
        (PREVIOUS, None, "1", "promote"),
        (CHAMPION, "1", "3", "promote"),
    ]
    assert registry.aliases() == {CHAMPION: "3", PREVIOUS: "1"}
    rows = _rows(store.duckdb_path)
    assert [(r["alias"], r["to_version"]) for r in rows] == [(CHAMPION, "1"), (PREVIOUS, "1"), (CHAMPION, "3")]
    assert rows[-1]["evidence"] == evidence and rows[-1]["reason"] == "challenger wins on 41,000 matured"


def test_a_failed_warehouse_write_after_the_move_is_raised_recorded_and_completed_later(
    store: Store,
) -> None:
    broken = _registry(store, BrokenLog())
    with pytest.raises(DeploymentNotRecordedError, match=r"moved to version 2 .*warehouse unreachable") as failure:
        broken.move_alias(CHALLENGER, "2", reason="trained", actor="airflow:retrain_challenger", action="assign")
    # The move happened and is recorded in MLflow, exactly as the event that failed to reach the warehouse.
    assert broken.aliases() == {CHALLENGER: "2"}
    assert broken.recorded_move(CHALLENGER) == failure.value.event
    assert _rows(store.duckdb_path) == []

    healthy = _registry(store)
    assert healthy.resend_recorded() == [failure.value.event]
    assert healthy.resend_recorded() == [failure.value.event]
    rows = _rows(store.duckdb_path)
    expected = [(failure.value.event.event_id, CHALLENGER, "2")]
    assert [(r["event_id"], r["alias"], r["to_version"]) for r in rows] == expected


def test_moving_back_and_forth_is_one_row_per_move(store: Store) -> None:
    registry = _registry(store)
    for version in ("1", "2", "1", "2"):
        registry.move_alias(CHALLENGER, version, reason=f"to {version}", actor="t", action="assign")
    rows = _rows(store.duckdb_path)
    assert [(r["from_version"], r["to_version"]) for r in rows] == [(None, "1"), ("1", "2"), ("2", "1"), ("1", "2")]
    assert len({r["event_id"] for r in rows}) == 4


def test_a_promotion_removes_the_promoted_challenger_alias(store: Store) -> None:
    registry = _registry(store)
    registry.move_alias(CHAMPION, "1", reason="first model", actor="bootstrap", action="first_deployment")
    registry.move_alias(CHALLENGER, "3", reason="trained", actor="t", action="assign")
    events = registry.promote_champion(
        "3",
        reason="superior by the margin",
        actor="gate",
        evidence={"verdict": "superior"},
        challenger_alias=CHALLENGER,
    )
    assert [(e.alias, e.from_version, e.to_version, e.action) for e in events] == [
        (PREVIOUS, None, "1", "promote"),
        (CHAMPION, "1", "3", "promote"),
        (CHALLENGER, "3", None, "promote"),
    ]
    assert registry.aliases() == {CHAMPION: "3", PREVIOUS: "1"}
    rows = _rows(store.duckdb_path)
    assert [(r["alias"], r["from_version"], r["to_version"]) for r in rows][-1] == (CHALLENGER, "3", None)


def test_retire_removes_a_challenger_alias_and_never_the_champion(store: Store) -> None:
    registry = _registry(store)
    registry.move_alias(CHAMPION, "1", reason="first model", actor="bootstrap", action="first_deployment")
    registry.move_alias(CHALLENGER, "2", reason="trained", actor="t", action="assign")
    with pytest.raises(AliasMoveRefusedError, match="never removed"):
        registry.remove_alias(CHAMPION, reason="futile", actor="gate", action="retire")
    with pytest.raises(AliasMoveRefusedError, match="not @previous"):
        registry.move_alias(PREVIOUS, "2", reason="futile", actor="gate", action="retire")
    event = registry.remove_alias(CHALLENGER, reason="futile at look 5", actor="gate", action="retire")
    assert event is not None and (event.from_version, event.to_version, event.action) == ("2", None, "retire")
    assert registry.aliases() == {CHAMPION: "1"}
    # The registered model's last-move tag says the alias is gone (not the assignment it replaced).
    tags = MlflowClient(tracking_uri=store.uri, registry_uri=store.uri).get_registered_model(store.model_name).tags
    assert json.loads(tags["deployment.challenger"])["to_version"] is None
    assert registry.remove_alias(CHALLENGER, reason="again", actor="gate", action="retire") is None
    assert [(r["alias"], r["action"], r["to_version"]) for r in _rows(store.duckdb_path)][-1] == (
        CHALLENGER,
        "retire",
        None,
    )


def test_a_removal_whose_warehouse_write_failed_is_sent_again(store: Store) -> None:
    registry = _registry(store)
    registry.move_alias(CHALLENGER, "2", reason="trained", actor="t", action="assign")
    broken = _registry(store, BrokenLog())
    with pytest.raises(DeploymentNotRecordedError) as failure:
        broken.remove_alias(CHALLENGER, reason="futile at look 5", actor="gate", action="retire")
    assert registry.aliases() == {}
    assert registry.resend_recorded() == [failure.value.event]
    assert registry.resend_recorded() == [failure.value.event]  # stored once
    rows = _rows(store.duckdb_path)
    assert [(r["action"], r["to_version"]) for r in rows] == [("assign", "2"), ("retire", None)]


def test_rollback_restores_previous_and_needs_one(store: Store) -> None:
    registry = _registry(store)
    registry.move_alias(CHAMPION, "1", reason="first model", actor="bootstrap", action="first_deployment")
    with pytest.raises(AliasMoveRefusedError, match="@previous is not set"):
        registry.rollback(reason=REASON, actor="bob@ops")
    registry.promote_champion("3", reason="gate passed", actor="gate", evidence={"verdict": "superior"})
    with pytest.raises(AliasMoveRefusedError, match="at least 20 characters"):
        registry.rollback(reason="bad", actor="bob@ops")
    events = registry.rollback(reason=REASON, actor="bob@ops")
    assert [(e.alias, e.from_version, e.to_version, e.action) for e in events] == [
        (CHAMPION, "3", "1", "rollback"),
        (PREVIOUS, "1", None, "rollback"),
    ]
    assert registry.aliases() == {CHAMPION: "1"}
    client = MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
    assert client.get_model_version(store.model_name, "3").tags["shadowgate.rolled_back"] == REASON
    with pytest.raises(AliasMoveRefusedError, match="@previous is not set"):  # no second rollback
        registry.rollback(reason=REASON, actor="bob@ops")
    rows = _rows(store.duckdb_path)
    assert [(r["alias"], r["action"], r["to_version"]) for r in rows][-2:] == [
        (CHAMPION, "rollback", "1"),
        (PREVIOUS, "rollback", None),
    ]


def test_the_api_source_tells_a_recorded_move_from_a_move_by_hand(store: Store) -> None:
    from shadowgate.serving.models import MlflowModelSource

    registry = _registry(store)
    registry.move_alias(CHAMPION, "1", reason="first model", actor="bootstrap", action="first_deployment")
    source = MlflowModelSource(tracking_uri=store.uri, model_name=store.model_name)
    assert source.resolve(CHAMPION).move_recorded is True  # type: ignore[union-attr]
    client = MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
    client.set_registered_model_alias(store.model_name, CHAMPION, "4")  # around the registry's rules
    assert source.resolve(CHAMPION).move_recorded is False  # type: ignore[union-attr]
