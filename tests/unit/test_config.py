"""Settings: one class per concern, env prefixes, and documentation that cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from shadowgate import config

ROOT = Path(__file__).resolve().parents[2]


def test_each_class_reads_its_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHADOWGATE_SIM_SEED", "99")
    monkeypatch.setenv("SHADOWGATE_SIM_SCENARIO", "concept_shock")
    monkeypatch.setenv("SHADOWGATE_MLFLOW_TRACKING_URI", "sqlite:///x.db")
    monkeypatch.setenv("SHADOWGATE_REDIS_URL", "redis://127.0.0.1:6379/3")
    assert config.SimulationSettings().seed == 99
    assert config.SimulationSettings().scenario is config.DriftScenario.CONCEPT_SHOCK
    assert config.MLflowSettings().tracking_uri == "sqlite:///x.db"
    assert config.RedisSettings().url == "redis://127.0.0.1:6379/3"
    assert config.TrainingSettings().seed == 11  # SHADOWGATE_SIM_SEED is not the training seed


def test_invalid_values_are_rejected_with_the_field_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHADOWGATE_SIM_DEFAULT_RATE", "1.5")
    with pytest.raises(pydantic.ValidationError, match="default_rate"):
        config.SimulationSettings()
    monkeypatch.delenv("SHADOWGATE_SIM_DEFAULT_RATE")
    with pytest.raises(pydantic.ValidationError, match="drift_start_day"):
        config.SimulationSettings(days=30, drift_start_day=31)


def test_every_setting_is_documented() -> None:
    for variable, _default, description in config.environment_variables():
        assert variable.startswith("SHADOWGATE_")
        assert len(description) > 10, f"{variable} has no docstring"


def test_env_example_is_generated_from_the_settings() -> None:
    assert (ROOT / ".env.example").read_text() == config.env_example(), "run `make env-example`"


def test_readme_lists_every_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [v for v, _, _ in config.environment_variables() if f"`{v}`" not in readme]
    assert not missing, f"README does not document {missing}"


def test_local_secret_is_made_once_private_and_kept(tmp_path: Path) -> None:
    import stat

    from shadowgate.config import local_secret

    path = tmp_path / "secrets" / "api_key"
    first = local_secret(path)
    assert len(first) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert local_secret(path) == first
    assert local_secret(tmp_path / "secrets" / "other") != first
