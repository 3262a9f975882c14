"""Models by alias: load from the registry, compile for the hot path, cache on disk, follow alias moves.

The service holds one immutable :class:`ModelSnapshot` (alias → compiled model). A background poller asks the registry
where each alias points; when an alias moves it loads the new version *beside* the old one and then swaps the snapshot
reference in one assignment, so a request sees either the old set or the new set, never a mix, and none fails.

Every compiled version is written to ``<cache_dir>/<model name>/versions/<version>/`` and the alias → version map of
the last successful refresh to ``aliases.json``: when the registry is down at start, the service serves the
last-known-good models from disk (no MLflow, no sklearn needed).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shadowgate.serving.scorer import CompiledModel, compile_model, load_compiled, save_compiled

logger = logging.getLogger(__name__)

_NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


class ModelSource(Protocol):
    """Where models come from (the MLflow registry in production; a dict in unit tests)."""

    model_name: str

    def resolve(self, alias: str) -> str | None:
        """The version behind ``alias`` now, or None when the alias is not set. Raises when the source is down."""
        ...

    def fetch(self, version: str) -> CompiledModel:
        """Load and compile one version."""
        ...


class MlflowModelSource:
    """Aliases and versions of one registered model in MLflow.

    Args:
        tracking_uri: MLflow tracking / registry URI.
        model_name: registered model name.
    """

    def __init__(self, *, tracking_uri: str, model_name: str) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self._client: Any = None  # one MlflowClient for every poll, made on first use (importing mlflow is slow)
        # MLflow's HTTP client retries with exponential backoff for minutes by default; a poller must fail fast and
        # keep serving what it has. (Process-wide, so only set when the embedding process has not chosen.)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")

    def resolve(self, alias: str) -> str | None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        try:
            return str(self._client.get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException as error:
            # A missing alias / model is an answer; anything else (server down, 5xx) means the source is unusable.
            if error.error_code in _NOT_FOUND:
                return None
            raise

    def fetch(self, version: str) -> CompiledModel:
        import mlflow

        mlflow.set_registry_uri(self.tracking_uri)
        mlflow.set_tracking_uri(self.tracking_uri)
        model = mlflow.sklearn.load_model(f"models:/{self.model_name}/{version}")
        return compile_model(model)


@dataclass(frozen=True)
class ServedModel:
    """One compiled model version, served under an alias."""

    alias: str
    version: str
    scorer: CompiledModel
    loaded_from: str
    """``registry`` or ``cache`` (last-known-good on disk)."""


@dataclass(frozen=True)
class ModelSnapshot:
    """The set of models served at one moment. Immutable: swapped as a whole."""

    model_name: str
    models: Mapping[str, ServedModel]
    generation: int
    loaded_at: dt.datetime

    def get(self, alias: str) -> ServedModel | None:
        return self.models.get(alias)

    def versions(self) -> dict[str, str]:
        return {alias: m.version for alias, m in self.models.items()}


@dataclass
class ManagerStats:
    refreshes: int = 0
    refresh_failures: int = 0
    swaps: int = 0
    last_refresh_ok: bool = False
    last_error: str | None = None
    source_up: bool = False
    history: list[dict[str, str]] = field(default_factory=list)


class ModelManager:
    """Keeps the compiled models of a set of aliases current.

    Args:
        source: the registry (or a test double).
        cache_dir: root of the last-known-good cache.
        aliases: aliases to serve (``champion`` first).
        poll_interval_s: seconds between registry polls in the background thread.
    """

    def __init__(
        self, *, source: ModelSource, cache_dir: Path, aliases: Iterable[str], poll_interval_s: float = 10.0
    ) -> None:
        self.source = source
        self.aliases = tuple(dict.fromkeys(aliases))
        self.poll_interval_s = poll_interval_s
        self.root = cache_dir / source.model_name
        self.stats = ManagerStats()
        # Generations start from the clock (ms), so that a later process's are larger than an earlier one's: the
        # shadow process then never waits for the models of a journal record written before a restart.
        self._snapshot = ModelSnapshot(source.model_name, {}, time.time_ns() // 1_000_000, dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()  # one refresh at a time; readers never lock
        self._saved: dict[str, str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------------ reading

    @property
    def snapshot(self) -> ModelSnapshot:
        """The current model set (one attribute read: safe from any thread)."""
        return self._snapshot

    # ------------------------------------------------------------------------------------------------ cache

    def _version_dir(self, version: str) -> Path:
        return self.root / "versions" / version

    def _cached(self, version: str) -> CompiledModel | None:
        path = self._version_dir(version)
        if not path.exists():
            return None
        try:
            return load_compiled(path)
        except (OSError, ValueError) as error:
            logger.warning("cached model version %s unusable (%s); it will be fetched again", version, error)
            return None

    def _store(self, version: str, scorer: CompiledModel) -> None:
        path = self._version_dir(version)
        if path.exists():
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_compiled(scorer, path)
        except Exception:  # a full disk must not stop serving; only the fallback for a later outage is lost
            logger.exception("could not cache model version %s in %s", version, path)

    def _write_aliases(self, versions: Mapping[str, str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "aliases.json.tmp"
        tmp.write_text(json.dumps({"aliases": dict(versions), "saved_at": dt.datetime.now(dt.UTC).isoformat()}))
        os.replace(tmp, self.root / "aliases.json")

    def _read_aliases(self) -> dict[str, str]:
        try:
            data = json.loads((self.root / "aliases.json").read_text())
            return {str(k): str(v) for k, v in data["aliases"].items()}
        except (OSError, ValueError, KeyError, AttributeError):
            return {}

    # ------------------------------------------------------------------------------------------------ loading

    def _swap(self, models: dict[str, ServedModel]) -> bool:
        old = self._snapshot
        if {a: m.version for a, m in models.items()} == old.versions():
            return False
        self._snapshot = ModelSnapshot(self.source.model_name, models, old.generation + 1, dt.datetime.now(dt.UTC))
        self.stats.swaps += 1
        self.stats.history.append({"at": self._snapshot.loaded_at.isoformat(), **self._snapshot.versions()})
        del self.stats.history[:-20]
        logger.info("serving models %s (generation %d)", self._snapshot.versions(), self._snapshot.generation)
        return True

    def refresh(self) -> bool:
        """Ask the source where every alias points and swap in what moved. Returns True when the set changed.

        When the source is down: the first refresh falls back to the disk cache; later ones keep what is served.
        """
        with self._lock:
            self.stats.refreshes += 1
            try:
                resolved = {alias: self.source.resolve(alias) for alias in self.aliases}
            except Exception as error:  # any failure of the registry means "keep serving what we have"
                self.stats.refresh_failures += 1
                self.stats.last_refresh_ok = False
                self.stats.source_up = False
                self.stats.last_error = f"registry unavailable: {type(error).__name__}: {error}"[:500]
                logger.warning("%s", self.stats.last_error)
                if not self._snapshot.models:
                    return self._load_from_cache()
                return False
            self.stats.source_up = True
            current = self._snapshot.models
            models: dict[str, ServedModel] = {}
            errors = []
            for alias, version in resolved.items():
                if version is None:
                    continue
                if alias in current and current[alias].version == version:
                    models[alias] = current[alias]
                    continue
                scorer = self._cached(version)
                origin = "cache"
                if scorer is None:
                    try:
                        scorer = self.source.fetch(version)
                    except Exception as error:  # a broken version must not take the service down
                        errors.append(f"{alias}=v{version}: {type(error).__name__}: {error}")
                        if alias in current:
                            models[alias] = current[alias]
                        continue
                    self._store(version, scorer)
                    origin = "registry"
                models[alias] = ServedModel(alias=alias, version=version, scorer=scorer, loaded_from=origin)
            self.stats.last_refresh_ok = not errors
            self.stats.last_error = "; ".join(errors)[:500] if errors else None
            if errors:
                self.stats.refresh_failures += 1
                logger.warning("could not load: %s", self.stats.last_error)
            changed = self._swap(models)
            versions = {a: m.version for a, m in models.items()}
            if not errors and versions != self._saved:  # the file changes only when an alias moves
                self._write_aliases(versions)
                self._saved = versions
            return changed

    def _load_from_cache(self) -> bool:
        models = {}
        for alias, version in self._read_aliases().items():
            if alias not in self.aliases:
                continue
            scorer = self._cached(version)
            if scorer is not None:
                models[alias] = ServedModel(alias=alias, version=version, scorer=scorer, loaded_from="cache")
        if models:
            logger.warning(
                "serving last-known-good models from %s: %s", self.root, {a: m.version for a, m in models.items()}
            )
        return self._swap(models)

    # ------------------------------------------------------------------------------------------------ polling

    def start(self) -> None:
        """Load once (synchronously), then poll in a daemon thread."""
        self.refresh()
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, name="model-poller", daemon=True)
            self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            with contextlib.suppress(Exception):
                self.refresh()

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def wait_for(self, alias: str, version: str, timeout_s: float = 30.0) -> bool:
        """Block until ``alias`` serves ``version`` (for tests and admin reloads)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            served = self._snapshot.get(alias)
            if served is not None and served.version == version:
                return True
            time.sleep(0.05)
        return False
