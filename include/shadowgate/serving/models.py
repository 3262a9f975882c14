"""Models by alias: load from the registry, compile for the hot path, cache on disk, follow alias moves.

The service holds one immutable :class:`ModelSnapshot` (alias → compiled model). A background poller asks the registry
where each alias points; when an alias moves it loads the new version *beside* the old one and then swaps the snapshot
reference in one assignment, so a request sees either the old set or the new set, never a mix, and none fails.

Only trusted models run (:mod:`shadowgate.decisioning.model_trust`): a version whose artifact is not skops, names a type
outside the reviewed list, ships code or was fitted on other features is **refused** — logged, counted by reason in
``shadowgate_model_loads_refused_total``, never fetched again — and the alias keeps serving what it served.

Every compiled version is written to ``<cache_dir>/<model name>/versions/<version>/<run id>/`` (a registry rebuilt
from scratch reuses version numbers, not run ids), signed with an HMAC key, and the alias → (version, run) map of the
last successful refresh to ``aliases.json``: when the registry is down at start, the service serves the last-known-good
models from disk (no MLflow, no sklearn needed). A cached model that fails its keyed check is refused (counted as
``cache_integrity``), moved aside, and fetched from the registry again — or, with the registry down, not served.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shadowgate.decisioning.model_trust import ModelRefusedError, RefusalReason
from shadowgate.registry import CHAMPION
from shadowgate.serving.artifacts import load_trusted_model
from shadowgate.serving.scorer import (
    CompiledModel,
    UnsupportedModelError,
    compile_model,
    load_compiled,
    save_compiled,
)

logger = logging.getLogger(__name__)

_NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


@dataclass(frozen=True)
class ModelRef:
    """A registry version as the registry reports it: the version number and the training run behind it."""

    version: str
    run_id: str
    move_recorded: bool | None = field(default=None, compare=False)
    """Whether the version's tags hold the recorded move (:mod:`shadowgate.registry`) that put the alias on it;
    None: the source cannot tell (a test double, the disk cache)."""


class ModelSource(Protocol):
    """Where models come from (the MLflow registry in production; a dict in unit tests)."""

    model_name: str

    def resolve(self, alias: str) -> ModelRef | None:
        """The version behind ``alias`` now, or None when the alias is not set. Raises when the source is down."""
        ...

    def fetch(self, version: str) -> CompiledModel:
        """Load and compile one version.

        Raises:
            ModelRefusedError: the version must not run (the reason says why); it is not fetched again.
            Exception: anything else (the source is down): tried again at the next refresh.
        """
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

    def resolve(self, alias: str) -> ModelRef | None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        try:
            found = self._client.get_model_version_by_alias(self.model_name, alias)
        except MlflowException as error:
            # A missing alias / model is an answer; anything else (server down, 5xx) means the source is unusable.
            if error.error_code in _NOT_FOUND:
                return None
            raise
        return ModelRef(
            version=str(found.version),
            run_id=str(found.run_id or ""),
            move_recorded=_move_recorded(dict(found.tags or {}), alias, str(found.version)),
        )

    def fetch(self, version: str) -> CompiledModel:
        """Download the version's files and load them as :func:`~shadowgate.serving.artifacts.load_trusted_model`
        allows (never through MLflow's loader: it trusts the artifact's own type list and code)."""
        import mlflow
        import mlflow.artifacts

        # A models:/ download resolves the version's run through the *global* tracking URI whatever is passed here;
        # left unset, MLflow 3 would create (and migrate) ./mlflow.db, racing with any other process doing the same.
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        with tempfile.TemporaryDirectory(prefix="shadowgate-model-") as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{self.model_name}/{version}",
                dst_path=tmp,
                tracking_uri=self.tracking_uri,
                registry_uri=self.tracking_uri,
            )
            model = load_trusted_model(Path(local))
        try:
            return compile_model(model)
        except UnsupportedModelError as error:
            raise ModelRefusedError(RefusalReason.UNSUPPORTED, str(error)) from error


def _move_recorded(tags: Mapping[str, str], alias: str, version: str) -> bool:
    """Whether ``tags`` (a version's) hold the move that put ``alias`` on ``version``, as the registry records every
    move (``alias.<alias>.event``)."""
    raw = tags.get(f"alias.{alias}.event")
    if not raw:
        return False
    try:
        event = json.loads(raw)
    except ValueError:
        return False
    return isinstance(event, dict) and event.get("alias") == alias and str(event.get("to_version")) == version


def _path_part(name: str) -> str:
    """``name`` as one safe path component: the registry's answers are not trusted to stay inside the cache."""
    if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}", name):
        return name
    return "h-" + hashlib.sha256(name.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ServedModel:
    """One compiled model version, served under an alias."""

    alias: str
    version: str
    scorer: CompiledModel
    loaded_from: str
    """``registry`` or ``cache`` (last-known-good on disk)."""
    run_id: str = ""
    """The training run behind the version."""


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
    refused: Counter[str] = field(default_factory=Counter)
    """Models refused, by :class:`~shadowgate.decisioning.model_trust.RefusalReason` value (each version once)."""
    unexplained: dict[str, str] = field(default_factory=dict)
    """alias → version served under it that no recorded move explains (an alias moved around the registry's rules:
    by hand in the MLflow UI, or by a script). Alerted once per version."""


class ModelManager:
    """Keeps the compiled models of a set of aliases current.

    Args:
        source: the registry (or a test double).
        cache_dir: root of the last-known-good cache.
        aliases: aliases to serve (``champion`` first).
        cache_key: secret HMAC key of the disk cache (a local secret; see ``runtime.model_cache_key``).
        poll_interval_s: seconds between registry polls in the background thread.
        on_unexplained: (alias, version) → an alert, called once per version when ``@champion`` points at a version
            no recorded move explains (it is served all the same: refusing it would take the service down).
    """

    def __init__(
        self,
        *,
        source: ModelSource,
        cache_dir: Path,
        aliases: Iterable[str],
        cache_key: bytes,
        poll_interval_s: float = 10.0,
        on_unexplained: Callable[[str, str], object] | None = None,
    ) -> None:
        if not cache_key:
            raise ValueError("the model cache needs a non-empty key")
        self.source = source
        self.aliases = tuple(dict.fromkeys(aliases))
        self.poll_interval_s = poll_interval_s
        self.on_unexplained = on_unexplained
        self.root = cache_dir / source.model_name
        self.stats = ManagerStats()
        self._key = cache_key
        # Generations start from the clock (ms), so that a later process's are larger than an earlier one's: the
        # shadow process then never waits for the models of a journal record written before a restart.
        self._snapshot = ModelSnapshot(source.model_name, {}, time.time_ns() // 1_000_000, dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()  # one refresh at a time; readers never lock
        self._saved: dict[str, ModelRef] | None = None
        # Refused versions are not fetched again: a bad artifact stays bad, and re-downloading it every poll would
        # flood the log and the count.
        self._refused: dict[ModelRef, ModelRefusedError] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------------ reading

    @property
    def snapshot(self) -> ModelSnapshot:
        """The current model set (one attribute read: safe from any thread)."""
        return self._snapshot

    # ------------------------------------------------------------------------------------------------ cache

    def _version_dir(self, ref: ModelRef) -> Path:
        return self.root / "versions" / _path_part(ref.version) / _path_part(ref.run_id or "no-run")

    def _binding(self, ref: ModelRef) -> dict[str, str]:
        return {"model": self.source.model_name, "version": ref.version, "run_id": ref.run_id}

    def _cached(self, ref: ModelRef) -> CompiledModel | None:
        path = self._version_dir(ref)
        if not path.exists():
            return None
        try:
            return load_compiled(path, key=self._key, binding=self._binding(ref))
        except (OSError, ValueError) as error:
            self._refuse(None, ref, ModelRefusedError(RefusalReason.CACHE_INTEGRITY, f"{path}: {error}"))
            # Aside, not deleted (it may be evidence), and out of the way of the next fetch and of the next start.
            aside = path.with_name(f"{path.name}.refused")
            shutil.rmtree(aside, ignore_errors=True)
            with contextlib.suppress(OSError):
                path.rename(aside)
            return None

    def _store(self, ref: ModelRef, scorer: CompiledModel) -> None:
        path = self._version_dir(ref)
        if path.exists():
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_compiled(scorer, path, key=self._key, binding=self._binding(ref))
        except Exception:  # a full disk must not stop serving; only the fallback for a later outage is lost
            logger.exception("could not cache model version %s in %s", ref.version, path)

    def _write_aliases(self, refs: Mapping[str, ModelRef]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "aliases.json.tmp"
        aliases = {alias: {"version": r.version, "run_id": r.run_id} for alias, r in refs.items()}
        tmp.write_text(json.dumps({"aliases": aliases, "saved_at": dt.datetime.now(dt.UTC).isoformat()}))
        os.replace(tmp, self.root / "aliases.json")

    def _read_aliases(self) -> dict[str, ModelRef]:
        try:
            data = json.loads((self.root / "aliases.json").read_text())
            return {
                str(alias): ModelRef(version=str(ref["version"]), run_id=str(ref["run_id"]))
                for alias, ref in data["aliases"].items()
            }
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            return {}

    def _refuse(self, alias: str | None, ref: ModelRef, refusal: ModelRefusedError) -> None:
        self.stats.refused[refusal.reason.value] += 1
        served = self._snapshot.get(alias) if alias is not None else None
        keeping = f"; @{alias} keeps version {served.version}" if served is not None else ""
        logger.error(
            "REFUSED model %s version %s (run %s)%s: %s%s",
            self.source.model_name,
            ref.version,
            ref.run_id or "?",
            f" for @{alias}" if alias else "",
            refusal,
            keeping,
        )

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
            for alias, ref in resolved.items():
                if ref is None:
                    continue
                served = current.get(alias)
                if served is not None and (served.version, served.run_id) == (ref.version, ref.run_id):
                    models[alias] = served
                    continue
                refused = self._refused.get(ref)
                if refused is not None:
                    errors.append(f"{alias}=v{ref.version}: refused: {refused}")
                    if served is not None:
                        models[alias] = served
                    continue
                scorer = self._cached(ref)
                origin = "cache"
                if scorer is None:
                    try:
                        scorer = self.source.fetch(ref.version)
                    except ModelRefusedError as refusal:
                        self._refused[ref] = refusal
                        self._refuse(alias, ref, refusal)
                        errors.append(f"{alias}=v{ref.version}: refused: {refusal}")
                        if served is not None:
                            models[alias] = served
                        continue
                    except Exception as error:  # a broken version must not take the service down
                        errors.append(f"{alias}=v{ref.version}: {type(error).__name__}: {error}")
                        if served is not None:
                            models[alias] = served
                        continue
                    self._store(ref, scorer)
                    origin = "registry"
                models[alias] = ServedModel(
                    alias=alias, version=ref.version, scorer=scorer, loaded_from=origin, run_id=ref.run_id
                )
            self.stats.last_refresh_ok = not errors
            self.stats.last_error = "; ".join(errors)[:500] if errors else None
            if errors:
                self.stats.refresh_failures += 1
                logger.warning("could not load: %s", self.stats.last_error)
            self._check_explained(resolved)
            changed = self._swap(models)
            refs = {a: ModelRef(m.version, m.run_id) for a, m in models.items()}
            if not errors and refs != self._saved:  # the file changes only when an alias moves
                self._write_aliases(refs)
                self._saved = refs
            return changed

    def _check_explained(self, resolved: Mapping[str, ModelRef | None]) -> None:
        """Alert (once per version) when ``@champion`` points at a version no recorded move explains: only the first
        deployment, the promotion gate and a rollback move it, and each records the move on the version."""
        ref = resolved.get(CHAMPION)
        if ref is None or ref.move_recorded is not False:
            self.stats.unexplained.pop(CHAMPION, None)
            return
        if self.stats.unexplained.get(CHAMPION) == ref.version:
            return
        self.stats.unexplained[CHAMPION] = ref.version
        logger.error(
            "ALERT @%s of %s points at version %s, and no recorded move explains it (moved outside the promotion "
            "gate, the first deployment and rollback); served all the same",
            CHAMPION,
            self.source.model_name,
            ref.version,
        )
        if self.on_unexplained is not None:
            try:
                self.on_unexplained(CHAMPION, ref.version)
            except Exception:  # an alert path that fails must not stop the poller
                logger.exception("could not send the unexplained-champion alert")

    def _load_from_cache(self) -> bool:
        models = {}
        for alias, ref in self._read_aliases().items():
            if alias not in self.aliases:
                continue
            scorer = self._cached(ref)
            if scorer is not None:
                models[alias] = ServedModel(
                    alias=alias, version=ref.version, scorer=scorer, loaded_from="cache", run_id=ref.run_id
                )
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


class ModelManagerCollector(Collector):
    """The model manager's refusals on ``/metrics``: ``shadowgate_model_loads_refused_total{reason=…}``, every
    reason shown (zeros too, so an alert can be written before the first refusal)."""

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def collect(self) -> Iterator[Any]:
        refused = CounterMetricFamily(
            "shadowgate_model_loads_refused",
            "Model versions (or cached compiled models) refused instead of served, by reason.",
            labels=["reason"],
        )
        counts = self._manager.stats.refused
        for reason in RefusalReason:
            refused.add_metric([reason.value], float(counts.get(reason.value, 0)))
        yield refused
        unexplained = GaugeMetricFamily(
            "shadowgate_model_alias_unexplained",
            "1 when the alias serves a version no recorded move explains (moved around the promotion gate).",
            labels=["alias"],
        )
        unexplained.add_metric([CHAMPION], float(CHAMPION in self._manager.stats.unexplained))
        yield unexplained
