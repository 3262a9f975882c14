"""The canary guard, run after every upload (DAG ``canary_guard``): judge each active canary's arms on the decisions
just logged, stop an arm that breaches, raise the share of one that held its stage (:mod:`shadowgate.evaluation.
canary_guard`).

A stop is an experiment-book transition to ``stopped`` (every customer is served by the champion again as soon as
the replicas follow the book, within a second or so): the book's audit stream records it with the reasons, and an
alert is recorded (``alerts``, kind ``canary_breach``) and sent. A stage advance is a share change in the book (a new
allocation period), audited the same way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from shadowgate.decisioning.experiments import Experiment, ExperimentMode
from shadowgate.evaluation.canary_guard import (
    SCORE_BINS,
    Action,
    ArmWindow,
    CanaryConfig,
    GuardVerdict,
    decide,
    judge,
)
from shadowgate.pipelines.alerts import Alert, Check, record_alerts
from shadowgate.pipelines.performance import json_safe
from shadowgate.storage.warehouse import Warehouse

logger = logging.getLogger(__name__)

STAGE_LOOKBACK = dt.timedelta(days=90)
"""How far back the guard looks for the current allocation period's first decision."""


@dataclass(frozen=True)
class CanaryRun:
    """One canary's verdict this run."""

    experiment_id: str
    experiment_version: str
    treatment_share: float
    action: str
    summary: str
    stage_started_at: str | None
    stage_hours: float
    signals: list[dict[str, Any]]
    applied: bool


@dataclass(frozen=True)
class GuardSummary:
    as_of: str
    dry_run: bool
    config_version: int
    config_digest: str
    canaries: list[CanaryRun]
    alerts_raised: list[dict[str, str]]

    def as_dict(self) -> dict[str, Any]:
        """Strict JSON values (Airflow's XCom refuses NaN and infinity: an unmeasured bound is None)."""
        return json_safe(asdict(self))


def _windows(
    warehouse: Warehouse, experiment: Experiment, *, since: dt.datetime, until: dt.datetime
) -> tuple[dict[str, ArmWindow], dt.datetime | None]:
    """The arms' windows of the experiment's current allocation period in [since, until), and the period's first
    decision in it."""
    version = str(experiment.version)
    params = {"experiment_id": experiment.id, "since": since, "until": until}
    rows = [r for r in warehouse.run("queries/canary_arms", params).to_pylist() if r["experiment_version"] == version]
    if not rows:
        return {}, None
    scoped = {**params, "experiment_version": version}
    bins: dict[str, list[int]] = {}
    for r in warehouse.run("queries/canary_scores", scoped).to_pylist():
        counts = bins.setdefault(r["arm"], [0] * SCORE_BINS)
        counts[min(max(int(r["bin"]), 0), SCORE_BINS - 1)] += int(r["n"])
    latency = {
        r["arm"]: float(r["p99_us"]) / 1000.0 for r in warehouse.run("queries/canary_latency", scoped).to_pylist()
    }
    first = min(r["first_served_at"] for r in rows)
    windows = {
        r["arm"]: ArmWindow(
            decisions=int(r["decisions"]),
            customers=int(r["customers"]),
            approved=int(r["approved"]),
            fallbacks=int(r["fallbacks"]),
            p99_latency_ms=latency.get(r["arm"]),
            score_counts=tuple(bins.get(r["arm"], [0] * SCORE_BINS)),
        )
        for r in rows
    }
    return windows, first


def _logged_share(warehouse: Warehouse, experiment: Experiment, *, since: dt.datetime, until: dt.datetime) -> float:
    """The treatment share the current period's assignments were made under (the design the split is checked
    against), or the book's when nothing is logged yet."""
    version = str(experiment.version)
    for r in warehouse.run(
        "queries/canary_arms", {"experiment_id": experiment.id, "since": since, "until": until}
    ).to_pylist():
        if r["experiment_version"] == version:
            return float(r["treatment_share"])
    return experiment.treatment_share


def _with_early(warehouse: Warehouse, experiment: Experiment, windows: dict[str, ArmWindow], *, since: dt.datetime,
                as_of: dt.datetime) -> dict[str, ArmWindow]:  # fmt: skip
    found = warehouse.run("queries/canary_early", {"experiment_id": experiment.id, "since": since, "as_of": as_of})
    early = {r["arm"]: (int(r["labels"]), int(r["defaults"])) for r in found.to_pylist()}
    out = {}
    for arm, w in windows.items():
        labels, defaults = early.get(arm, (0, 0))
        out[arm] = ArmWindow(**{**asdict(w), "early_labels": labels, "early_defaults": defaults})
    return out


def guard_canaries(
    *,
    open_warehouse: Callable[[], Warehouse],
    experiments: Sequence[Experiment],
    config: CanaryConfig,
    now: dt.datetime,
    dry_run: bool,
    stop: Callable[[str, str], object],
    set_share: Callable[[str, float, str], object],
    send: Callable[[Alert], object],
) -> GuardSummary:
    """Judge every active canary of ``experiments`` as of ``now`` and act (see the module).

    Args:
        open_warehouse: the warehouse holding ``prediction_logs`` (and ``labeled_predictions``); receives ``alerts``.
        experiments: the experiment book's experiments (only active canaries are judged).
        config: thresholds and rollouts (``canary.yaml``).
        now: the run's instant (the window ends here).
        dry_run: judge and report, change nothing.
        stop: (experiment id, reason) → stops the experiment in the book.
        set_share: (experiment id, share, reason) → changes its treatment share in the book.
        send: delivers an alert that begins to hold.
    """
    now = now.astimezone(dt.UTC)
    guard = config.guard
    canaries = [e for e in experiments if e.is_active and e.mode is ExperimentMode.CANARY]
    verdicts: list[tuple[Experiment, GuardVerdict, dt.datetime | None, float]] = []
    checks: list[Check] = []
    warehouse = open_warehouse()
    try:
        for e in canaries:
            stage_since = max(now - STAGE_LOOKBACK, e.started_at or now - STAGE_LOOKBACK)
            stage, started = _windows(warehouse, e, since=stage_since, until=now)
            recent, _ = _windows(warehouse, e, since=now - dt.timedelta(hours=guard.window_hours), until=now)
            if started is not None:
                stage = _with_early(warehouse, e, stage, since=started, as_of=now)
            share = _logged_share(warehouse, e, since=stage_since, until=now)
            judged = {
                name: judge(w["control"], w["treatment"], share=share, guard=guard) if len(w) == 2 else ()
                for name, w in (("recent", recent), ("stage", stage))
                if set(w) <= {"control", "treatment"}
            }
            hours = (now - started).total_seconds() / 3600 if started is not None else 0.0
            verdict = decide(
                judged.get("recent", ()),
                judged.get("stage", ()),
                share=share,
                stage_hours=hours,
                rollout=config.rollouts.get(e.id),
            )
            verdicts.append((e, verdict, started, hours))
            for s in verdict.signals:
                alert = None
                if s.breached:
                    alert = Alert(
                        title=f"canary {e.id} stopped: {s.name}",
                        text=(
                            f"{s.reason}. The guard stopped the canary: every customer is served by the champion "
                            "again. Look at the treatment model (its errors, scores and latency) before starting a "
                            "new canary."
                        ),
                        severity="error",
                        source="canary_guard",
                        details={"experiment_version": e.version, "share": share, "value": s.value},
                        at=now.isoformat(),
                        kind="canary_breach",
                        subject=e.id,
                        condition=s.name,
                    )
                checks.append(Check(kind="canary_breach", subject=e.id, condition=s.name, alert=alert))
        recorded = record_alerts(warehouse, checks, at=now, send=send) if checks and not dry_run else None
    finally:
        warehouse.close()
    runs = []
    for e, verdict, started, hours in verdicts:
        applied = False
        if not dry_run and verdict.action is Action.STOP:
            stop(e.id, f"canary guard: {verdict.summary}"[:500])
            applied = True
        elif not dry_run and verdict.action is Action.ADVANCE and verdict.next_share is not None:
            set_share(e.id, verdict.next_share, f"canary guard: {verdict.summary}"[:500])
            applied = True
        runs.append(
            CanaryRun(
                experiment_id=e.id,
                experiment_version=str(e.version),
                treatment_share=e.treatment_share,
                action=verdict.action.value,
                summary=verdict.summary,
                stage_started_at=started.isoformat() if started is not None else None,
                stage_hours=round(hours, 2),
                signals=[asdict(s) for s in verdict.signals],
                applied=applied,
            )
        )
        logger.info("canary_guard %s v%s at %.0f%%: %s", e.id, e.version, 100 * e.treatment_share, verdict.summary)
    raised = []
    if recorded is not None:
        sent = set(recorded.sent)
        raised = [
            {"severity": c.alert.severity, "title": c.alert.title, "text": c.alert.text}
            for c in checks
            if c.alert is not None and c.alert.title in sent
        ]
    return GuardSummary(
        as_of=now.isoformat(),
        dry_run=dry_run,
        config_version=config.version,
        config_digest=config.digest,
        canaries=runs,
        alerts_raised=raised,
    )


@contextlib.contextmanager
def guard_inputs(*, now: dt.datetime, dry_run: bool = False) -> Iterator[Mapping[str, Any]]:
    """The arguments of :func:`guard_canaries` from the environment's settings (for the DAG): the warehouse, the
    experiment book in Redis (the guard changes it there; without Redis nothing can be stopped, so it fails), the
    shipped or configured ``canary.yaml``, the shared alert path."""
    from shadowgate.config import (
        AlertSettings,
        ExperimentSettings,
        PathSettings,
        PromotionSettings,
        RedisSettings,
        WarehouseSettings,
    )
    from shadowgate.decisioning.experiments import ExperimentStatus, load_book, plan_share, plan_transition
    from shadowgate.evaluation.canary_guard import load_canary_config
    from shadowgate.pipelines.alerts import send_alert
    from shadowgate.storage import open_warehouse
    from shadowgate.storage.experiment_store import ExperimentStore, redis_client

    home = PathSettings().home
    warehouse_settings = WarehouseSettings()
    client = redis_client(RedisSettings().resolved_url, timeout_s=5.0)
    store = ExperimentStore(client, key_prefix=ExperimentSettings().key_prefix)
    actor = "airflow:canary_guard"
    url = AlertSettings().webhook_url
    webhook = url.get_secret_value() if url else None
    try:
        stored = store.load()
        book = stored.book if stored is not None else load_book()

        def stop(experiment_id: str, reason: str) -> None:
            store.commit(
                lambda b: plan_transition(
                    b,
                    experiment_id,
                    to=ExperimentStatus.STOPPED,
                    actor=actor,
                    reason=reason,
                    at=dt.datetime.now(dt.UTC),
                )
            )

        def set_share(experiment_id: str, share: float, reason: str) -> None:
            store.commit(
                lambda b: plan_share(
                    b, experiment_id, share=share, actor=actor, reason=reason, at=dt.datetime.now(dt.UTC)
                )
            )

        yield {
            "open_warehouse": lambda: open_warehouse(warehouse_settings, home=home),
            "experiments": book.experiments,
            "config": load_canary_config(PromotionSettings().canary_path),
            "now": now,
            "dry_run": dry_run,
            "stop": stop,
            "set_share": set_share,
            "send": lambda a: send_alert(a, webhook_url=webhook),
        }
    finally:
        client.close()
