"""ModelManager with an in-memory source (unit level; the MLflow source is exercised in tests/api)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shadowgate.serving.models import ModelManager
from shadowgate.serving.scorer import CompiledModel, compile_model


def _scorer(seed: int) -> CompiledModel:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 38))
    y = (x[:, 0] + rng.normal(size=200) > 0).astype(int)
    return compile_model(Pipeline([("scale", StandardScaler()), ("logit", LogisticRegression())]).fit(x, y))


class DictSource:
    """Aliases and versions held in dicts; ``down`` makes every call fail like an unreachable registry."""

    model_name = "bnpl_default"

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}
        self.versions: dict[str, CompiledModel] = {}
        self.fetches: list[str] = []
        self.down = False

    def resolve(self, alias: str) -> str | None:
        if self.down:
            raise ConnectionError("registry unreachable")
        return self.aliases.get(alias)

    def fetch(self, version: str) -> CompiledModel:
        if self.down:
            raise ConnectionError("registry unreachable")
        self.fetches.append(version)
        return self.versions[version]


@pytest.fixture
def source() -> DictSource:
    s = DictSource()
    s.versions = {"1": _scorer(1), "2": _scorer(2), "3": _scorer(3)}
    s.aliases = {"champion": "1", "challenger": "2"}
    return s


def _manager(source: DictSource, tmp_path: Path) -> ModelManager:
    return ModelManager(source=source, cache_dir=tmp_path, aliases=("champion", "challenger"), poll_interval_s=60)


def test_alias_moves_swap_the_whole_snapshot(source: DictSource, tmp_path: Path) -> None:
    manager = _manager(source, tmp_path)
    assert manager.refresh() is True
    first = manager.snapshot
    assert first.versions() == {"champion": "1", "challenger": "2"}
    assert first.generation > 1_700_000_000_000  # from the clock (ms): a restarted process's are larger
    assert manager.refresh() is False  # nothing moved: same snapshot object
    assert manager.snapshot is first

    source.aliases["champion"] = "3"
    assert manager.refresh() is True
    second = manager.snapshot
    assert second.versions() == {"champion": "3", "challenger": "2"}
    assert second.generation == first.generation + 1
    assert second.get("challenger") is first.get("challenger")  # unchanged aliases are reused, not reloaded
    assert first.versions() == {"champion": "1", "challenger": "2"}  # old snapshot untouched (immutable)
    assert source.fetches == ["1", "2", "3"]

    del source.aliases["challenger"]
    manager.refresh()
    assert manager.snapshot.versions() == {"champion": "3"}


def test_registry_outage_keeps_serving_and_a_new_process_uses_the_cache(source: DictSource, tmp_path: Path) -> None:
    manager = _manager(source, tmp_path)
    manager.refresh()
    row = np.linspace(-1, 1, 38)
    expected = manager.snapshot.models["champion"].scorer.score_one(row)
    source.down = True
    assert manager.refresh() is False
    assert manager.stats.source_up is False
    assert manager.stats.refresh_failures == 1
    assert manager.snapshot.versions() == {"champion": "1", "challenger": "2"}

    restarted = _manager(source, tmp_path)
    restarted.refresh()
    assert restarted.snapshot.versions() == {"champion": "1", "challenger": "2"}
    assert {m.loaded_from for m in restarted.snapshot.models.values()} == {"cache"}
    assert restarted.snapshot.models["champion"].scorer.score_one(row) == expected


def test_a_version_that_fails_to_load_keeps_the_previous_one(source: DictSource, tmp_path: Path) -> None:
    manager = _manager(source, tmp_path)
    manager.refresh()
    source.aliases["challenger"] = "99"  # not loadable
    manager.refresh()
    assert manager.snapshot.versions() == {"champion": "1", "challenger": "2"}
    assert manager.stats.last_refresh_ok is False
    assert "challenger=v99" in (manager.stats.last_error or "")


def test_cached_versions_are_not_fetched_again(source: DictSource, tmp_path: Path) -> None:
    _manager(source, tmp_path).refresh()
    source.fetches.clear()
    again = _manager(source, tmp_path)
    again.refresh()
    assert source.fetches == []
    assert again.snapshot.versions() == {"champion": "1", "challenger": "2"}


def test_no_registry_and_no_cache_serves_nothing(source: DictSource, tmp_path: Path) -> None:
    source.down = True
    manager = _manager(source, tmp_path)
    manager.refresh()
    assert manager.snapshot.models == {}
