"""Wiring of the decision service from settings: models, experiments, policy, the shadow process, metrics.

The HTTP layer (``api/``) builds one :class:`Runtime` in its lifespan and keeps it on ``app.state``; tests build one
with their own settings and model source. Nothing here imports fastapi.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry

from shadowgate.config import (
    ExperimentSettings,
    MLflowSettings,
    PathSettings,
    RedisSettings,
    ServingSettings,
    local_secret,
)
from shadowgate.decisioning.policies import DecisionPolicy, load_policy
from shadowgate.events.deployment import DeploymentEvent
from shadowgate.registry import CHAMPION
from shadowgate.serving.journal import FsyncPolicy
from shadowgate.serving.models import MlflowModelSource, ModelManager, ModelManagerCollector, ModelSource
from shadowgate.serving.service import DecisionService
from shadowgate.serving.sidecar import Sidecar, SidecarCollector, SidecarConfig, exposition
from shadowgate.storage.experiment_store import ExperimentBookCollector, ExperimentStore, LiveExperiments, redis_client

logger = logging.getLogger(__name__)


def state_dir(serving: ServingSettings, home: Path) -> Path:
    """The API's own state (``ServingSettings.state_dir``, else ``<home>/serving``), created private (0700)."""
    path = (serving.state_dir or home / "serving").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _api_secret(name: str, home: Path, state: Path) -> str:
    """A local secret of the API's, under ``<state>/secrets``. One an earlier release kept under ``<home>/secrets``
    (where every Airflow task can write) is moved here, so hashes and signatures stay the same."""
    path = state / "secrets" / name
    legacy = home / "secrets" / name
    if not path.exists() and legacy.exists() and legacy.resolve() != path.resolve():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.replace(legacy, path)
        os.chmod(path, 0o600)
        logger.warning("moved the API's %s from %s to %s (only the API's state should hold it)", name, legacy.parent,
                       path.parent)  # fmt: skip
    return local_secret(path)


def customer_salt(serving: ServingSettings, home: Path) -> str:
    """The secret salt of customer-id hashes: from settings, else made once under ``<state_dir>/secrets``."""
    if serving.customer_salt is not None:
        return serving.customer_salt.get_secret_value()
    return _api_secret("customer_salt", home, state_dir(serving, home))


def model_cache_key(serving: ServingSettings, home: Path) -> bytes:
    """The HMAC key of the compiled-model cache: from settings, else made once under ``<state_dir>/secrets``."""
    if serving.model_cache_key is not None:
        return serving.model_cache_key.get_secret_value().encode()
    return _api_secret("model_cache_key", home, state_dir(serving, home)).encode()


@dataclass
class Runtime:
    """Everything the API serves from. ``start`` / ``close`` in the app's lifespan."""

    serving: ServingSettings
    models: ModelManager
    experiments: LiveExperiments
    policy: DecisionPolicy
    service: DecisionService
    shadow: Sidecar
    registry: CollectorRegistry
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    rollback: Callable[[str, str], list[DeploymentEvent]] | None = None
    """(reason, actor) → the recorded moves of ``@champion`` back to ``@previous`` (None: no registry to move, as
    with a test source). Blocking: call it off the event loop."""

    def start(self) -> None:
        # The shadow process first: it is forked from a fork server that has loaded only this package (no threads,
        # no models), and it must be there before the first request.
        self.shadow.start()
        self.models.start()
        self.experiments.start()
        self.shadow.send_models(self.models.snapshot)
        # Everything loaded so far (libraries, models) lives as long as the process: moving it out of the collector's
        # reach keeps full collections — pauses of tens of ms under load — short.
        gc.collect()
        gc.freeze()

    def close(self) -> None:
        # Stop swapping models, then let the shadow process commit what is journaled (what Redis does not take in
        # time stays in the journal for the next start) and exit.
        self.models.close()
        self.experiments.close()
        self.shadow.close()

    @property
    def ready(self) -> bool:
        """Ready to decide with a model: the champion is loaded (the fallback policy would answer otherwise)."""
        return self.models.snapshot.get(CHAMPION) is not None

    def metrics_text(self) -> bytes:
        """Prometheus exposition: this process's metrics and the shadow process's."""
        return exposition(self.registry, self.shadow)


def alert_unexplained_move(alias: str, version: str, *, model_name: str) -> None:
    """The alert when the API finds ``@alias`` on a version no recorded move explains (through the shared alert path:
    logged, and posted to ``SHADOWGATE_ALERT_WEBHOOK_URL`` when set)."""
    from shadowgate.config import AlertSettings
    from shadowgate.pipelines.alerts import Alert, send_alert

    alert = Alert(
        title=f"@{alias} of {model_name} moved outside the promotion gate",
        text=(
            f"The API found @{alias} on version {version} and no recorded move explains it: only the first "
            "deployment, promote_challenger and `shadowgate rollback` move it, and each records the move on the "
            "version. It is served all the same. Find who moved it (the registry's history), then either roll back "
            "or let the gate decide."
        ),
        severity="error",
        source="api",
        details={"alias": alias, "version": version, "model": model_name},
        kind="unexplained_alias_move",
        subject=f"{alias}@{version}",
        condition="no recorded move",
    )
    url = AlertSettings().webhook_url
    send_alert(alert, webhook_url=url.get_secret_value() if url else None)


def rollback_champion(reason: str, actor: str, *, mlflow: MLflowSettings, home: Path) -> list[DeploymentEvent]:
    """``@champion`` back to ``@previous`` through the registry's rules, recorded in MLflow and the warehouse."""
    from shadowgate.config import WarehouseSettings
    from shadowgate.registry import ModelRegistry
    from shadowgate.storage.deployments import WarehouseDeploymentLog

    registry = ModelRegistry(
        tracking_uri=mlflow.tracking_uri,
        model_name=mlflow.model_name,
        deployments=WarehouseDeploymentLog.from_settings(WarehouseSettings(), home=home),
    )
    return registry.rollback(reason=reason, actor=actor)


def build_runtime(
    *,
    paths: PathSettings | None = None,
    redis: RedisSettings | None = None,
    mlflow: MLflowSettings | None = None,
    serving: ServingSettings | None = None,
    experiments: ExperimentSettings | None = None,
    source: ModelSource | None = None,
) -> Runtime:
    """A runtime from settings (defaults: the environment). ``source`` replaces the MLflow registry in tests."""
    paths = paths or PathSettings()
    redis = redis or RedisSettings()
    mlflow = mlflow or MLflowSettings()
    serving = serving or ServingSettings()
    book_settings = experiments or ExperimentSettings()
    home = paths.home.expanduser()
    state = state_dir(serving, home)
    models = ModelManager(
        source=source or MlflowModelSource(tracking_uri=mlflow.tracking_uri, model_name=mlflow.model_name),
        cache_dir=state / "model_cache",
        aliases=(CHAMPION, *serving.challenger_aliases),
        cache_key=model_cache_key(serving, home),
        poll_interval_s=serving.model_poll_interval_s,
        on_unexplained=functools.partial(alert_unexplained_move, model_name=mlflow.model_name),
    )
    live_experiments = LiveExperiments(
        store=ExperimentStore(
            redis_client(redis.resolved_url, timeout_s=book_settings.redis_timeout_s),
            key_prefix=book_settings.key_prefix,
        ),
        # The file the per-replica store used to keep: an upgraded replica starts from (and seeds Redis with) it.
        cache_path=state / "experiments.json",
        poll_interval_s=book_settings.poll_interval_s,
    )
    policy = load_policy(serving.policy)
    shadow = Sidecar(
        SidecarConfig(
            redis_url=redis.resolved_url,
            journal_dir=state / "journal",
            customer_salt=customer_salt(serving, home),
            predictions_stream=serving.predictions_stream,
            budget_ms=serving.model_budget_ms,
            policy=policy,
            journal_fsync=FsyncPolicy(serving.journal_fsync),
            journal_fsync_interval_s=serving.journal_fsync_interval_s,
            journal_segment_bytes=int(serving.journal_segment_mb * (1 << 20)),
            journal_max_pending_bytes=int(serving.journal_max_pending_mb * (1 << 20)),
            journal_retention_s=serving.journal_retention_s,
            outcome_dedup_ttl_s=serving.outcome_dedup_ttl_s,
        ),
        stall_timeout_s=serving.shadow_stall_timeout_s,
    )
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SidecarCollector(shadow, lambda: models.stats.swaps))
    registry.register(ExperimentBookCollector(live_experiments))
    registry.register(ModelManagerCollector(models))
    service = DecisionService(
        models=models,
        experiments=lambda: live_experiments.book,
        policy=policy,
        shadow=shadow,
        customer_salt=shadow.config.customer_salt,
    )
    return Runtime(
        serving=serving,
        models=models,
        experiments=live_experiments,
        policy=policy,
        service=service,
        shadow=shadow,
        registry=registry,
        rollback=None if source is not None else functools.partial(rollback_champion, mlflow=mlflow, home=home),
    )
