"""The ``promote_challenger`` DAG's task: each challenger's evidence from the warehouse (:func:`comparison_evidence`),
the gate's decision (:func:`shadowgate.promotion.decide`) and its moves in the registry, recorded
(:func:`promote_challengers`); :func:`promotion_inputs` resolves its arguments from the settings."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, astuple, dataclass, replace
from typing import Any

from shadowgate.events.deployment import DeploymentEvent
from shadowgate.pipelines.performance import Z_95, ComparisonPlan, json_safe, plan_id
from shadowgate.promotion import Action, Evidence, GateConfig, PromotionDecision, decide
from shadowgate.registry import CHALLENGER, CHAMPION, ModelRegistry
from shadowgate.storage.results import ResultsStore, RunRecord
from shadowgate.storage.warehouse import Warehouse

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Latency:
    """A model version's logged scoring latency over a period."""

    alias: str
    model_version: str
    scored: int
    p50_ms: float
    p99_ms: float


def model_latencies(warehouse: Warehouse, *, start: dt.datetime, end: dt.datetime) -> dict[str, Latency]:
    """Per ``alias@version``, the p50 and p99 of the latencies logged with its scores in ``[start, end)``."""
    rows = warehouse.run("queries/model_latency", {"period_start": start, "period_end": end}).to_pylist()
    return {
        f"{r['alias']}@{r['model_version']}": Latency(
            alias=r["alias"],
            model_version=r["model_version"],
            scored=int(r["scored"]),
            p50_ms=float(r["p50_us"]) / 1000.0,
            p99_ms=float(r["p99_us"]) / 1000.0,
        )
        for r in rows
    }


# ------------------------------------------------------------------------------------------------ the evidence

GATE_ALERT_KINDS = ("drift", "unseen_category")
"""Open alerts of these kinds about a challenger block its promotion (``gates.yaml``: ``drift``)."""

LATENCY_WINDOW = dt.timedelta(days=7)
"""The challenger's p99 latency is taken from its plan's first week to the run (at least the week before the run)."""


@dataclass(frozen=True)
class PairEvidence:
    """What the warehouse holds about one comparison of two versions: the gate's :class:`Evidence` and the figures
    behind it, for the record."""

    evidence: Evidence
    weeks: int
    """Cohort weeks of the plan with a look, pooled for the calibration and business figures."""
    estimate: float | None
    """The plan's inverse-variance ΔAUC at its latest look (ranks several challengers promoted in one run)."""
    figures: dict[str, Any]


def pool_brier(weeks: Sequence[Mapping[str, float]], *, estimate: bool = False) -> float | None:
    """Upper 95 % bound (or, with ``estimate``, the estimate) of the inverse-variance mean of the weekly Brier
    differences (SE from each week's CI)."""
    weights, total = 0.0, 0.0
    for w in weeks:
        low, high, value = (
            w.get("brier_difference_ci_low"),
            w.get("brier_difference_ci_high"),
            w.get("brier_difference"),
        )
        if low is None or high is None or value is None or not high > low:
            continue
        se = (high - low) / (2 * Z_95)
        weights += 1 / se**2
        total += value / se**2
    if weights == 0:
        return None
    return total / weights + (0.0 if estimate else Z_95 / math.sqrt(weights))


@dataclass(frozen=True)
class PolicyFigures:
    """A challenger and the champion under one policy, over the applicants both scored in a period: how many, how
    many each would approve at the policy's cut-off, and the expected loss (PD × amount) of each one's approvals
    priced with the challenger's PDs and with the champion's."""

    applicants: int
    approved_challenger: int
    approved_champion: int
    loss_challenger_by_challenger: float
    loss_champion_by_challenger: float
    loss_challenger_by_champion: float
    loss_champion_by_champion: float

    def __add__(self, other: PolicyFigures) -> PolicyFigures:
        return PolicyFigures(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


def business_changes(
    figures: Mapping[str, PolicyFigures], *, priced_by_challenger: bool
) -> tuple[float | None, float | None, dict[str, Any]]:
    """Per policy (``figures``: policy → figures), the challenger's approval-rate change and the relative change of
    its expected loss per applicant against the champion's, **both priced with the same PDs**: the challenger's when
    ``priced_by_challenger`` (it is the better calibrated), else the champion's. A model priced with its own PD would
    be judged by its own calibration: after a concept shock the champion underestimates the risk it takes, and an
    honest challenger would look costlier. Returns the largest |approval change|, the largest loss change, and the
    figures per policy."""
    approval, loss, out = None, None, {}
    for policy, f in sorted(figures.items()):
        if not f.applicants:
            continue
        rate_t, rate_c = f.approved_challenger / f.applicants, f.approved_champion / f.applicants
        if priced_by_challenger:
            loss_t, loss_c = f.loss_challenger_by_challenger, f.loss_champion_by_challenger
        else:
            loss_t, loss_c = f.loss_challenger_by_champion, f.loss_champion_by_champion
        loss_t, loss_c = loss_t / f.applicants, loss_c / f.applicants
        change = rate_t - rate_c
        relative = (loss_t - loss_c) / loss_c if loss_c > 0 else (0.0 if loss_t == 0 else math.inf)
        out[policy] = {
            "applicants": f.applicants,
            "approval_rate_challenger": rate_t,
            "approval_rate_champion": rate_c,
            "expected_loss_per_applicant_challenger": loss_t,
            "expected_loss_per_applicant_champion": loss_c,
            "priced_by": "challenger" if priced_by_challenger else "champion",
        }
        approval = change if approval is None or abs(change) > abs(approval) else approval
        loss = relative if loss is None or relative > loss else loss
    return approval, loss, out


def applicant_figures(
    warehouse: Warehouse,
    *,
    challenger: str,
    champion: str,
    since: dt.datetime,
    until: dt.datetime,
    policies: Mapping[str, float],
) -> dict[str, PolicyFigures]:
    """Every applicant of [since, until) both versions scored, per policy (``policies``: name → its medium
    cut-off): each one's approvals and their expected loss priced both ways (``queries/applicant_policy``)."""
    out: dict[str, PolicyFigures] = {}
    for policy, medium in policies.items():
        params = {
            "since": since, "until": until, "policy": policy, "medium": medium,
            "treatment": challenger, "control": champion,
        }  # fmt: skip
        (r,) = warehouse.run("queries/applicant_policy", params).to_pylist()
        out[policy] = PolicyFigures(
            int(r["applicants"]),
            int(r["approved_treatment"] or 0),
            int(r["approved_control"] or 0),
            float(r["loss_treatment_priced_by_treatment"] or 0.0),
            float(r["loss_control_priced_by_treatment"] or 0.0),
            float(r["loss_treatment_priced_by_control"] or 0.0),
            float(r["loss_control_priced_by_control"] or 0.0),
        )
    return out


def comparison_evidence(
    warehouse: Warehouse,
    *,
    experiment: ComparisonPlan,
    challenger: str,
    champion: str,
    as_of: dt.datetime,
    policies: Mapping[str, float] | None = None,
) -> PairEvidence:
    """The gate's evidence for ``challenger`` against ``champion`` (both ``alias@version``) in ``experiment``, as
    the warehouse holds it at ``as_of``: the verdict of the pair's plan at its latest look on the final label; over
    the plan's looked weeks, the pooled Brier difference's upper bound and, per policy (``policies``: name → its
    medium cut-off; default the shipped policies'), the approval-rate and expected-loss-per-applicant changes on
    every applicant of those weeks (the worst policy counts); the split check of a canary (Bonferroni over the
    weeks); the challenger's p99 latency from the plan's first week (at least the last 7 days); its open drift and
    unseen-category alerts."""
    if policies is None:
        policies = shipped_cutoffs()
    pair = f"{challenger} vs {champion}"
    found = warehouse.run("queries/comparison_plan", {"plan_id": plan_id(experiment.experiment_id, pair)}).to_pylist()
    # The latency of the decisions the comparison rests on (from the plan's first week; the last week without a plan).
    since = as_of - LATENCY_WINDOW
    if found:
        since = min(since, dt.datetime.combine(found[0]["started_on"], dt.time(), dt.UTC))
    latency = model_latencies(warehouse, start=since, end=as_of).get(challenger)
    open_alerts = warehouse.run(
        "queries/open_alerts", {"kinds": list(GATE_ALERT_KINDS), "subjects": [challenger]}
    ).to_pylist()
    common: dict[str, Any] = {
        "challenger": challenger,
        "champion": champion,
        "latency_p99_ms": latency.p99_ms if latency is not None else None,
        "open_drift_alerts": tuple(f"{a['kind']}: {a['condition']}" for a in open_alerts),
    }
    if not found:
        return PairEvidence(Evidence(**common), weeks=0, estimate=None, figures={"plan": None})
    started_on = found[0]["started_on"]
    rows = warehouse.run(
        "queries/promotion_evidence",
        {
            "since_date": started_on,
            "experiment_id": experiment.experiment_id,
            "comparison": pair,
        },
    ).to_pylist()
    comparison: dict[dt.date, dict[str, float]] = {}
    for r in rows:
        comparison.setdefault(r["cohort_start"], {})[r["metric"]] = r["value"]
    looked = sorted(w for w, f in comparison.items() if (f.get("look") or 0) > 0)
    verdict, look, estimate = None, None, None
    if looked:
        last = comparison[looked[-1]]
        look = int(last["look"])
        verdict = next((v for v in ("superior", "futile", "not_shown") if last.get(f"verdict_{v}") == 1.0), "continue")
        estimate = last.get("sequential_estimate")
    # The weeks the verdict rests on: the plan's looks up to the one that ended it (later weeks carry it, no look).
    plan_weeks = [w for w in looked if not comparison[w].get("plan_ended")]
    approval: float | None = None
    loss: float | None = None
    policy_figures: dict[str, Any] = {}
    if plan_weeks:
        # Business figures on every applicant of those weeks (not the approved ones only), at each policy's cut-off.
        period = (
            dt.datetime.combine(plan_weeks[0], dt.time(), dt.UTC),
            dt.datetime.combine(plan_weeks[-1] + dt.timedelta(days=7), dt.time(), dt.UTC),
        )
        applicants = applicant_figures(
            warehouse, challenger=challenger, champion=champion, since=period[0], until=period[1], policies=policies
        )
        # Both models' approvals priced with the better-calibrated one's PDs (the pooled Brier difference's sign).
        brier_estimate = pool_brier([comparison[w] for w in plan_weeks], estimate=True)
        priced_by_challenger = brier_estimate is None or brier_estimate <= 0
        approval, loss, policy_figures = business_changes(applicants, priced_by_challenger=priced_by_challenger)
    srm = None
    if experiment.mode == "canary":
        p_values = [comparison[w]["srm_p_value"] for w in plan_weeks if comparison[w].get("srm_p_value") is not None]
        srm = min(1.0, min(p_values) * len(p_values)) if p_values else None
    evidence = Evidence(
        **common,
        plan_verdict=verdict,
        look=look,
        brier_difference_high=pool_brier([comparison[w] for w in plan_weeks]),
        approval_rate_change=approval,
        expected_loss_change=loss,
        srm_p_value=srm,
    )
    figures = {
        "plan": found[0]["description"],
        "plan_started_on": str(started_on),
        "weeks": [str(w) for w in plan_weeks],
        "policies": policy_figures,
        "latency": None
        if latency is None
        else {"p50_ms": latency.p50_ms, "p99_ms": latency.p99_ms, "n": latency.scored},
    }
    return PairEvidence(evidence, weeks=len(plan_weeks), estimate=estimate, figures=figures)


def shipped_cutoffs() -> dict[str, float]:
    """Each shipped decision policy's medium cut-off (a score below it is approved)."""
    from shadowgate.decisioning.policies import load_policy, shipped_policy_names

    return {name: load_policy(name).thresholds.medium for name in shipped_policy_names()}


# ------------------------------------------------------------------------------------------------ the decision


PROMOTION_EXPERIMENT = "shadowgate/promotion"
"""The MLflow experiment of the gate's verdicts: one run per (run day, experiment, challenger)."""


@dataclass(frozen=True)
class Candidate:
    """One challenger version the gate looks at, in one experiment of the book."""

    experiment: ComparisonPlan
    alias: str
    version: str

    @property
    def name(self) -> str:
        return f"{self.alias}@{self.version}"


@dataclass(frozen=True)
class PromotionSummary:
    """What one run of the gate concluded and did."""

    as_of: str
    dry_run: bool
    champion_before: str | None
    champion_after: str | None
    decisions: list[dict[str, Any]]
    """Per (experiment, challenger): the decision with every gate, the evidence's figures, the moves made."""
    sentence: str
    mlflow_runs: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def candidates(registry: ModelRegistry, experiments: Sequence[ComparisonPlan]) -> list[Candidate]:
    """The challengers the gate looks at: the treatment of every active experiment whose control is the champion
    (when a version is behind its alias), and ``@challenger`` under ``champion-vs-challenger`` when no experiment
    names it (the weekly evaluation compares it the same way)."""
    chosen = [e for e in experiments if e.control_alias == CHAMPION]
    if not any(e.treatment_alias == CHALLENGER for e in chosen):
        chosen.append(ComparisonPlan(experiment_id=f"champion-vs-{CHALLENGER}", treatment_alias=CHALLENGER))
    out = []
    for e in chosen:
        found = registry.version(e.treatment_alias)
        if found is not None:
            out.append(Candidate(experiment=e, alias=e.treatment_alias, version=found.version))
    return out


def promote_challengers(
    *,
    open_warehouse: Callable[[], Warehouse],
    registry: ModelRegistry,
    experiments: Sequence[ComparisonPlan],
    gates: GateConfig,
    as_of: dt.datetime,
    dry_run: bool,
    actor: str,
    results: ResultsStore | None = None,
    end_experiment: Callable[[str, str], object] | None = None,
) -> PromotionSummary:
    """The promotion gate for every challenger (see :mod:`shadowgate.promotion`), and its moves.

    * No champion yet: the first challenger takes ``@champion`` (the first deployment, no comparison).
    * Else each challenger's evidence is read from the warehouse (:func:`comparison_evidence`) and decided. Several
      challengers that pass in one run: the one with the largest ΔAUC estimate is promoted, the others wait (they
      are compared with the new champion from now on, under a new plan). A promotion moves ``@champion`` to the
      challenger and the old champion to ``@previous``, and removes the challenger's alias; a retirement removes
      the challenger's alias. Each move is a deployment event whose evidence is the decision with every gate's
      value, threshold and verdict and the gate file's version and hash.
    * A canary experiment whose challenger is promoted or retired is ended (``end_experiment``).
    * One MLflow run per decision in ``shadowgate/promotion`` (tags: each gate; description: the decision).

    ``dry_run``: decide and report, move nothing, record nothing.
    """
    as_of = as_of.astimezone(dt.UTC)
    champion = registry.version(CHAMPION)
    before = f"{CHAMPION}@{champion.version}" if champion is not None else None
    found = candidates(registry, experiments)
    decided: list[tuple[Candidate, PromotionDecision, PairEvidence | None]] = []
    if champion is None:
        if found:
            first = found[0]
            decided.append((first, decide(Evidence(challenger=first.name, champion=None), gates), None))
    else:
        warehouse = open_warehouse()
        try:
            for c in found:
                if c.version == champion.version:
                    continue  # the champion's own version under a challenger alias: nothing to compare
                gathered = comparison_evidence(
                    warehouse, experiment=c.experiment, challenger=c.name, champion=before or "", as_of=as_of
                )
                decided.append((c, decide(gathered.evidence, gates), gathered))
        finally:
            warehouse.close()  # the moves below write deployment events through a connection of their own
    decided = _one_promotion(decided)
    outcomes: list[dict[str, Any]] = []
    mlflow_runs: dict[str, str] = {}
    moved_versions: set[str] = set()
    for c, decision, pair in decided:
        events: list[DeploymentEvent] = []
        record = {**decision.evidence(), "figures": pair.figures if pair else {}}
        if not dry_run and c.version not in moved_versions:
            events = _apply(registry, c, decision, record=record, actor=actor)
            if events:
                moved_versions.add(c.version)
            if events and c.experiment.mode == "canary" and end_experiment is not None:
                try:
                    end_experiment(c.experiment.experiment_id, decision.summary)
                except Exception as error:  # the aliases moved: say what is left to do, never fail the decision
                    logger.error(
                        "%s: the aliases moved but the canary %s was not completed in the book (%s): complete it "
                        "(POST /v1/admin/experiments/%s/transition)",
                        c.name,
                        c.experiment.experiment_id,
                        error,
                        c.experiment.experiment_id,
                    )
        if results is not None and not dry_run:
            run_id = _log_decision(results, c, decision, pair, as_of=as_of, events=events)
            mlflow_runs[f"{c.experiment.experiment_id}/{c.name}"] = run_id
        outcomes.append(
            {
                "experiment_id": c.experiment.experiment_id,
                **record,
                "moves": [
                    {"alias": e.alias, "from": e.from_version, "to": e.to_version, "action": e.action} for e in events
                ],
            }
        )
    after = registry.version(CHAMPION)
    after_name = f"{CHAMPION}@{after.version}" if after is not None else None
    if not decided:
        sentence = f"{before or 'no champion'}: no challenger to decide on"
    else:
        sentence = ("DRY RUN — nothing moved. " if dry_run else "") + " | ".join(d.summary for _, d, _ in decided)
    logger.info("promote_challenger %s: %s", as_of.isoformat(), sentence)
    return PromotionSummary(
        as_of=as_of.isoformat(),
        dry_run=dry_run,
        champion_before=before,
        champion_after=after_name,
        decisions=outcomes,
        sentence=sentence,
        mlflow_runs=mlflow_runs,
    )


def _one_promotion(
    decided: list[tuple[Candidate, PromotionDecision, PairEvidence | None]],
) -> list[tuple[Candidate, PromotionDecision, PairEvidence | None]]:
    """At most one challenger version is promoted per run: the passing one with the largest ΔAUC estimate; the
    others that passed wait, saying why."""
    passing = [(c, p) for c, d, p in decided if d.action is Action.PROMOTE]
    if len({c.version for c, _ in passing}) <= 1:
        return decided
    best = max(passing, key=lambda cp: cp[1].estimate if cp[1] and cp[1].estimate is not None else -math.inf)[0]
    out = []
    for c, d, p in decided:
        if d.action is Action.PROMOTE and c.version != best.version:
            reason = f"{best.name} passed too with a larger ΔAUC and is promoted this run; compared anew next"
            d = replace(d, action=Action.WAIT, summary=f"{c.name}: not promoted ({reason})", reasons=(reason,))
        out.append((c, d, p))
    return out


def _apply(
    registry: ModelRegistry, c: Candidate, decision: PromotionDecision, *, record: Mapping[str, Any], actor: str
) -> list[DeploymentEvent]:
    if decision.action is Action.FIRST_DEPLOYMENT:
        event = registry.move_alias(
            CHAMPION, c.version, reason=decision.summary, actor=actor, action="first_deployment", evidence=record
        )
        events = [event] if event is not None else []
        removed = registry.remove_alias(
            c.alias, reason=f"became the first champion: {decision.summary}", actor=actor, action="first_deployment"
        )
        return events + ([removed] if removed is not None else [])
    if decision.action is Action.PROMOTE:
        return registry.promote_champion(
            c.version, reason=decision.summary, actor=actor, evidence=record, challenger_alias=c.alias
        )
    if decision.action is Action.RETIRE:
        current = registry.version(c.alias)
        if current is None or current.version != c.version:
            return []  # the alias moved on since (a newer version): nothing of this one to retire
        removed = registry.remove_alias(c.alias, reason=decision.summary, actor=actor, action="retire", evidence=record)
        return [removed] if removed is not None else []
    return []


def _log_decision(
    results: ResultsStore,
    c: Candidate,
    decision: PromotionDecision,
    pair: PairEvidence | None,
    *,
    as_of: dt.datetime,
    events: Sequence[DeploymentEvent],
) -> str:
    experiment_id = results.ensure_experiment(
        PROMOTION_EXPERIMENT,
        tags={
            "mlflow.experimentKind": "custom_model_development",
            "mlflow.note.content": (
                "The promotion gate's verdicts: one run per challenger and run of promote_challenger. Each run's "
                "tags hold every gate's value, threshold and verdict and the gate file's version and hash; its "
                "description says what was decided and why."
            ),
        },
    )
    tags = {
        "shadowgate.role": "promotion",
        "shadowgate.action": decision.action.value,
        "shadowgate.challenger": decision.challenger,
        "shadowgate.champion": decision.champion or "",
        "shadowgate.experiment_id": c.experiment.experiment_id,
        "shadowgate.gate_config_version": str(decision.config_version),
        "shadowgate.gate_config_digest": decision.config_digest,
        "shadowgate.moves": "; ".join(f"@{e.alias} {e.from_version}→{e.to_version}" for e in events) or "none",
        "mlflow.note.content": decision.summary
        + ("\n\n" + "\n".join(f"- {g.gate}: {'pass' if g.passed else 'FAIL'} — {g.reason}" for g in decision.gates)),
    }
    metrics: dict[str, float] = {}
    for g in decision.gates:
        tags[f"shadowgate.gate.{g.gate}"] = f"{'pass' if g.passed else 'fail'}: {g.reason}"
        tags[f"shadowgate.gate.{g.gate}.threshold"] = str(g.threshold)
        metrics[f"gate.{g.gate}.passed"] = float(g.passed)
        if isinstance(g.value, (int, float)) and not isinstance(g.value, bool) and math.isfinite(g.value):
            metrics[f"gate.{g.gate}.value"] = float(g.value)
    if pair is not None and pair.estimate is not None:
        metrics["auc_difference_estimate"] = float(pair.estimate)
    day = as_of.date().isoformat()
    recorded = results.record(
        experiment_id,
        RunRecord(
            key=f"promotion/{day}/{c.experiment.experiment_id}/{c.name}",
            name=f"gate: {c.name} · {day} · {decision.action.value}",
            params={"challenger": c.name, "experiment": c.experiment.experiment_id, "as_of": as_of.isoformat()},
            tags=tags,
            metrics=metrics,
            step=0,
            timestamp_ms=int(as_of.timestamp() * 1000),
        ),
    )
    return recorded.run_id


@contextlib.contextmanager
def promotion_inputs(*, as_of: dt.datetime, dry_run: bool = False) -> Iterator[dict[str, Any]]:
    """The arguments of :func:`promote_challengers` resolved from the environment's settings (for the DAG): the
    warehouse, the registry with its deployment log, the book's active experiments (from Redis; the shipped book when
    Redis cannot be reached), the gate file, the MLflow results store, and ending a canary through the book."""
    from shadowgate.config import (
        ExperimentSettings,
        MLflowSettings,
        PathSettings,
        PromotionSettings,
        RedisSettings,
        WarehouseSettings,
    )
    from shadowgate.decisioning.experiments import ExperimentStatus, load_book, plan_transition
    from shadowgate.pipelines.performance import plans_from_book
    from shadowgate.promotion import load_gates
    from shadowgate.storage import open_warehouse
    from shadowgate.storage.deployments import WarehouseDeploymentLog
    from shadowgate.storage.experiment_store import ExperimentStore, ExperimentStoreUnavailableError, redis_client
    from shadowgate.storage.results import MlflowResultsStore

    home = PathSettings().home
    warehouse_settings = WarehouseSettings()
    mlflow_settings = MLflowSettings()
    client = redis_client(RedisSettings().resolved_url, timeout_s=5.0)
    store = ExperimentStore(client, key_prefix=ExperimentSettings().key_prefix)
    try:
        try:
            stored = store.load()
            book = stored.book if stored is not None else load_book()
        except ExperimentStoreUnavailableError as error:
            logger.warning("experiment book: Redis unreachable (%s); using the shipped experiments.yaml", error)
            book = load_book()
        actor = "airflow:promote_challenger"

        def end_experiment(experiment_id: str, reason: str) -> None:
            store.commit(
                lambda b: plan_transition(
                    b,
                    experiment_id,
                    to=ExperimentStatus.COMPLETED,
                    actor=actor,
                    reason=reason,
                    at=dt.datetime.now(dt.UTC),
                )
            )

        yield {
            "open_warehouse": lambda: open_warehouse(warehouse_settings, home=home),
            "registry": ModelRegistry(
                tracking_uri=mlflow_settings.tracking_uri,
                model_name=mlflow_settings.model_name,
                deployments=WarehouseDeploymentLog.from_settings(warehouse_settings, home=home),
            ),
            "experiments": plans_from_book(e for e in book.experiments if e.is_active),
            "gates": load_gates(PromotionSettings().gates_path),
            "as_of": as_of,
            "dry_run": dry_run,
            "actor": actor,
            "results": MlflowResultsStore(mlflow_settings.tracking_uri),
            "end_experiment": end_experiment,
        }
    finally:
        client.close()
