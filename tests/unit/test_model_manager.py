"""ModelManager with an in-memory source (unit level; the MLflow source is exercised in tests/api)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from shadowgate.decisioning.model_trust import ModelRefusedError, RefusalReason
from shadowgate.serving.models import ModelManager, ModelManagerCollector, ModelRef
from shadowgate.serving.scorer import CompiledModel, compile_model

KEY = b"unit-test-cache-key"


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
        self.refusals: dict[str, ModelRefusedError] = {}
        self.fetches: list[str] = []
        self.down = False

    def resolve(self, alias: str) -> ModelRef | None:
        if self.down:
            raise ConnectionError("registry unreachable")
        version = self.aliases.get(alias)
        return None if version is None else ModelRef(version=version, run_id=f"run-{version}")

    def fetch(self, version: str) -> CompiledModel:
        if self.down:
            raise ConnectionError("registry unreachable")
        self.fetches.append(version)
        if version in self.refusals:
            raise self.refusals[version]
        return self.versions[version]


@pytest.fixture
def source() -> DictSource:
    s = DictSource()
    s.versions = {"1": _scorer(1), "2": _scorer(2), "3": _scorer(3)}
    s.aliases = {"champion": "1", "challenger": "2"}
    return s


def _manager(source: DictSource, tmp_path: Path, key: bytes = KEY) -> ModelManager:
    return ModelManager(
        source=source, cache_dir=tmp_path, aliases=("champion", "challenger"), cache_key=key, poll_interval_s=60
    )


def _refused_metrics(manager: ModelManager) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(ModelManagerCollector(manager))
    text = generate_latest(registry).decode()
    prefix = "shadowgate_model_loads_refused_total{reason="
    return {
        line[len(prefix) + 1 : line.index('"}')]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


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
    assert second.models["champion"].run_id == "run-3"

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
    assert restarted.snapshot.models["champion"].run_id == "run-1"


def test_a_version_that_fails_to_load_keeps_the_previous_one(source: DictSource, tmp_path: Path) -> None:
    manager = _manager(source, tmp_path)
    manager.refresh()
    source.aliases["challenger"] = "99"  # not loadable
    manager.refresh()
    assert manager.snapshot.versions() == {"champion": "1", "challenger": "2"}
    assert manager.stats.last_refresh_ok is False
    assert "challenger=v99" in (manager.stats.last_error or "")
    assert sum(manager.stats.refused.values()) == 0  # a failure to fetch is not a refusal: it is tried again
    manager.refresh()
    assert source.fetches.count("99") == 2


def test_a_refused_version_is_counted_once_and_never_served(source: DictSource, tmp_path: Path) -> None:
    manager = _manager(source, tmp_path)
    manager.refresh()
    first = manager.snapshot
    source.refusals["3"] = ModelRefusedError(RefusalReason.FORMAT, "serialization 'pickle' is not skops")
    source.aliases["champion"] = "3"
    for _ in range(3):
        assert manager.refresh() is False
    assert manager.snapshot is first  # not swapped
    assert manager.snapshot.versions() == {"champion": "1", "challenger": "2"}
    assert source.fetches.count("3") == 1  # refused once, not fetched again every poll
    assert manager.stats.refused == {"format": 1}
    assert "refused: format: serialization 'pickle' is not skops" in (manager.stats.last_error or "")
    metrics = _refused_metrics(manager)
    assert metrics["format"] == 1.0
    assert set(metrics) == {r.value for r in RefusalReason} and sum(metrics.values()) == 1.0
    assert not (tmp_path / "bnpl_default" / "versions" / "3").exists()  # nothing refused reaches the cache


def _tamper(cache: Path) -> None:
    """Change the weights and recompute the bare fingerprint, as anyone who can write the folder could."""
    from shadowgate.serving.scorer import _fingerprint

    with np.load(cache / "arrays.npz", allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["weights"] = -arrays["weights"]
    np.savez(cache / "arrays.npz", **arrays)
    meta = json.loads((cache / "meta.json").read_text())
    meta["fingerprint"] = _fingerprint(meta["family"], meta["n_features"], arrays)
    (cache / "meta.json").write_text(json.dumps(meta))


def test_a_tampered_cache_is_refused_and_fetched_again(source: DictSource, tmp_path: Path) -> None:
    _manager(source, tmp_path).refresh()
    cache = tmp_path / "bnpl_default" / "versions" / "1" / "run-1"
    _tamper(cache)
    source.fetches.clear()
    restarted = _manager(source, tmp_path)
    restarted.refresh()
    champion = restarted.snapshot.models["champion"]
    assert (champion.version, champion.loaded_from) == ("1", "registry")
    row = np.linspace(-1, 1, 38)
    assert champion.scorer.score_one(row) == source.versions["1"].score_one(row)
    assert source.fetches == ["1"]  # only the tampered one; the challenger came from its (intact) cache
    assert restarted.stats.refused == {"cache_integrity": 1}
    assert (cache.parent / "run-1.refused").is_dir()  # kept aside for inspection
    again = _manager(source, tmp_path)  # the re-fetched copy was cached again, signed
    again.refresh()
    assert {m.loaded_from for m in again.snapshot.models.values()} == {"cache"}
    assert sum(again.stats.refused.values()) == 0


def test_with_the_registry_down_a_tampered_cache_is_not_served(source: DictSource, tmp_path: Path) -> None:
    _manager(source, tmp_path).refresh()
    _tamper(tmp_path / "bnpl_default" / "versions" / "1" / "run-1")
    source.down = True
    restarted = _manager(source, tmp_path)
    restarted.refresh()
    restarted.refresh()
    assert restarted.snapshot.versions() == {"challenger": "2"}
    assert restarted.stats.refused == {"cache_integrity": 1}


def test_a_cache_signed_with_another_key_is_not_served(source: DictSource, tmp_path: Path) -> None:
    _manager(source, tmp_path).refresh()
    source.down = True
    other = _manager(source, tmp_path, key=b"another-key")
    other.refresh()
    assert other.snapshot.models == {}
    assert other.stats.refused == {"cache_integrity": 2}


def test_the_cache_is_keyed_by_run_as_well_as_version(source: DictSource, tmp_path: Path) -> None:
    _manager(source, tmp_path).refresh()
    # A registry rebuilt from scratch: version 1 is another training run now.
    source.versions["1"] = _scorer(7)
    source.resolve = lambda alias: ModelRef(version=source.aliases[alias], run_id="rebuilt")  # type: ignore[method-assign]
    source.fetches.clear()
    fresh = _manager(source, tmp_path)
    fresh.refresh()
    assert source.fetches == ["1", "2"]
    row = np.linspace(-1, 1, 38)
    assert fresh.snapshot.models["champion"].scorer.score_one(row) == source.versions["1"].score_one(row)


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


def test_registry_answers_never_leave_the_cache_folder(source: DictSource, tmp_path: Path) -> None:
    source.resolve = lambda alias: ModelRef(version="1", run_id="../../../escaped")  # type: ignore[method-assign]
    manager = _manager(source, tmp_path / "cache")
    manager.refresh()
    assert manager.snapshot.versions() == {"champion": "1", "challenger": "1"}
    assert not (tmp_path / "escaped").exists()
    (stored,) = (tmp_path / "cache" / "bnpl_default" / "versions" / "1").iterdir()
    assert stored.name.startswith("h-")


def test_a_champion_no_recorded_move_explains_is_served_and_alerted_once(source: DictSource, tmp_path: Path) -> None:
    class Unrecorded(DictSource):
        def __init__(self) -> None:
            super().__init__()
            self.recorded: set[str] = set()

        def resolve(self, alias: str) -> ModelRef | None:
            ref = super().resolve(alias)
            if ref is None:
                return None
            return ModelRef(ref.version, ref.run_id, move_recorded=ref.version in self.recorded)

    moved = Unrecorded()
    moved.versions, moved.aliases, moved.recorded = source.versions, {"champion": "1"}, {"1"}
    alerts: list[tuple[str, str]] = []
    manager = ModelManager(
        source=moved,
        cache_dir=tmp_path,
        aliases=("champion",),
        cache_key=KEY,
        poll_interval_s=60,
        on_unexplained=lambda alias, version: alerts.append((alias, version)),
    )
    manager.refresh()
    assert alerts == [] and manager.stats.unexplained == {}
    moved.aliases["champion"] = "3"  # moved by hand: version 3 carries no recorded move
    manager.refresh()
    manager.refresh()
    assert manager.snapshot.versions() == {"champion": "3"}  # served all the same
    assert alerts == [("champion", "3")]  # once per version
    registry = CollectorRegistry()
    registry.register(ModelManagerCollector(manager))
    assert 'shadowgate_model_alias_unexplained{alias="champion"} 1.0' in generate_latest(registry).decode()
    moved.recorded.add("3")  # the move recorded after all (e.g. a rollback onto it)
    manager.refresh()
    assert manager.stats.unexplained == {}
