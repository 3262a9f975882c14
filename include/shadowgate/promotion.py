"""The promotion gate: (evidence, gate config) → a decision with a reason for every gate. Pure: no I/O.

The gate is a versioned file (``decisioning/config/gates.yaml``); every decision carries the file's version and a
hash of its content, so an audit can tell which rules a promotion passed. Each gate yields its value, its threshold
and a verdict; the decision is

* ``first_deployment`` — there is no champion yet: the challenger takes ``@champion`` without a comparison;
* ``promote`` — every gate passes;
* ``retire`` — the comparison plan ended *futile* or *not shown*: inconclusive never ships, the challenger goes with
  its reasons and ``@champion`` is untouched;
* ``wait`` — the plan has not decided yet, or it says *superior* but another gate does not pass (yet): nothing moves,
  the decision so far is recorded.

A gate whose evidence is missing does not pass (``value`` None): a promotion is never waved through for lack of data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shadowgate.decisioning.experiments import config_resource, read_yaml, validate_config

SHIPPED_GATES = "gates.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComparisonGate(_Strict):
    required_verdict: str = Field(default="superior", pattern="^superior$")


class CalibrationGate(_Strict):
    brier_noninferiority_margin: float = Field(ge=0.0, lt=0.25)


class BusinessGate(_Strict):
    max_approval_rate_change: float = Field(gt=0.0, le=1.0)
    max_expected_loss_increase: float = Field(ge=0.0)


class LatencyGate(_Strict):
    p99_budget_ms: float = Field(gt=0.0)


class SplitGate(_Strict):
    srm_p_min: float = Field(gt=0.0, lt=1.0)


class DriftGate(_Strict):
    block_on_open_alerts: bool = True


class GateConfig(_Strict):
    """The gates of ``gates.yaml``."""

    version: int = Field(ge=1)
    description: str = ""
    comparison: ComparisonGate = ComparisonGate()
    calibration: CalibrationGate
    business: BusinessGate
    latency: LatencyGate
    split: SplitGate
    drift: DriftGate = DriftGate()

    @property
    def digest(self) -> str:
        """A hash of the gates' content (what an audit compares), independent of key order and comments."""
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:16]


def load_gates(path: Path | str | None = None) -> GateConfig:
    """The gate config from a YAML file, or the shipped ``gates.yaml``.

    Raises:
        ConfigError: naming the file and the invalid field.
    """
    source = config_resource(SHIPPED_GATES) if path is None else Path(path)
    return validate_config(GateConfig, read_yaml(source), source=str(source))


@dataclass(frozen=True)
class Evidence:
    """What the gate looks at for one challenger against the champion (None: not measured).

    Attributes:
        challenger: ``alias@version``.
        champion: ``alias@version`` (None: no champion yet).
        plan_verdict: the comparison plan's verdict on the final label: ``superior``, ``futile``, ``not_shown`` or
            ``continue`` (adjusted across the experiment's challengers by the plan's α split).
        look: the plan's look that gave it.
        brier_difference_high: upper end of the 95 % CI of Brier(challenger) − Brier(champion).
        approval_rate_change: challenger − champion approval rate at the policy's cut-offs.
        expected_loss_change: relative change of the expected loss per applicant at the cut-offs.
        latency_p99_ms: the challenger's p99 scoring latency.
        srm_p_value: the sample-ratio test of the experiment's arms (None: not a canary, nothing to check).
        open_drift_alerts: unresolved drift or unseen-category alerts on the challenger's inputs.
    """

    challenger: str
    champion: str | None
    plan_verdict: str | None = None
    look: int | None = None
    brier_difference_high: float | None = None
    approval_rate_change: float | None = None
    expected_loss_change: float | None = None
    latency_p99_ms: float | None = None
    srm_p_value: float | None = None
    open_drift_alerts: tuple[str, ...] = ()


class Action(StrEnum):
    FIRST_DEPLOYMENT = "first_deployment"
    PROMOTE = "promote"
    RETIRE = "retire"
    WAIT = "wait"


@dataclass(frozen=True)
class GateResult:
    """One gate: its value, its threshold (in words when not a number) and whether it passed."""

    gate: str
    value: Any
    threshold: Any
    passed: bool
    reason: str


@dataclass(frozen=True)
class PromotionDecision:
    action: Action
    challenger: str
    champion: str | None
    gates: tuple[GateResult, ...]
    config_version: int
    config_digest: str
    summary: str
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def evidence(self) -> dict[str, Any]:
        """JSON-able: what the deployment event and the MLflow tags record."""
        return {
            "action": self.action.value,
            "challenger": self.challenger,
            "champion": self.champion,
            "gate_config_version": self.config_version,
            "gate_config_digest": self.config_digest,
            "gates": [
                {"gate": g.gate, "value": g.value, "threshold": g.threshold, "passed": g.passed, "reason": g.reason}
                for g in self.gates
            ],
            "summary": self.summary,
        }


def _bound(gate: str, value: float | None, limit: float, *, what: str, below: bool = True) -> GateResult:
    if value is None:
        return GateResult(gate, None, limit, False, f"{what}: not measured")
    passed = value <= limit if below else value >= limit
    relation = "≤" if below else "≥"
    return GateResult(
        gate, value, limit, passed, f"{what} {value:.4g} {'' if passed else 'not '}{relation} {limit:g}".strip()
    )


def decide(evidence: Evidence, config: GateConfig) -> PromotionDecision:
    """The gate's decision for one challenger (see the module)."""

    def made(
        action: Action, gates: tuple[GateResult, ...], summary: str, reasons: tuple[str, ...] = ()
    ) -> PromotionDecision:
        return PromotionDecision(
            action=action,
            challenger=evidence.challenger,
            champion=evidence.champion,
            gates=gates,
            config_version=config.version,
            config_digest=config.digest,
            summary=summary,
            reasons=reasons,
        )

    if evidence.champion is None:
        return made(
            Action.FIRST_DEPLOYMENT,
            (),
            f"{evidence.challenger}: no champion yet — the first deployment, without a comparison",
        )
    verdict = evidence.plan_verdict
    comparison = GateResult(
        "comparison",
        verdict,
        config.comparison.required_verdict,
        verdict == config.comparison.required_verdict,
        f"the comparison plan's verdict on the final label: {verdict or 'none yet'}"
        + (f" (look {evidence.look})" if evidence.look else ""),
    )
    gates = [
        comparison,
        _bound(
            "calibration",
            evidence.brier_difference_high,
            config.calibration.brier_noninferiority_margin,
            what="Brier difference, upper 95 % bound",
        ),
        _bound(
            "approval_rate",
            None if evidence.approval_rate_change is None else abs(evidence.approval_rate_change),
            config.business.max_approval_rate_change,
            what="approval-rate change",
        ),
        _bound(
            "expected_loss",
            evidence.expected_loss_change,
            config.business.max_expected_loss_increase,
            what="expected loss per applicant, relative change",
        ),
        _bound("latency", evidence.latency_p99_ms, config.latency.p99_budget_ms, what="p99 latency (ms)"),
    ]
    if evidence.srm_p_value is not None:
        gates.append(
            _bound("split", evidence.srm_p_value, config.split.srm_p_min, what="sample-ratio p-value", below=False)
        )
    if config.drift.block_on_open_alerts:
        open_alerts = evidence.open_drift_alerts
        gates.append(
            GateResult(
                "drift",
                list(open_alerts),
                "no open alert",
                not open_alerts,
                "no open drift alert on its inputs" if not open_alerts else f"open: {', '.join(open_alerts)}",
            )
        )
    failed = tuple(g.reason for g in gates if not g.passed)
    if verdict in ("futile", "not_shown"):
        action = Action.RETIRE
        summary = (
            f"{evidence.challenger} retired: the comparison plan ended {verdict} — inconclusive never ships; "
            f"{evidence.champion} stays"
        )
    elif not failed:
        action = Action.PROMOTE
        summary = f"{evidence.challenger} promoted over {evidence.champion}: every gate passed"
    else:
        action = Action.WAIT
        summary = f"{evidence.challenger}: not promoted yet ({'; '.join(failed)}); nothing moved"
    return made(action, tuple(gates), summary, failed)


def decisions_for(evidence: Mapping[str, Evidence], config: GateConfig) -> dict[str, PromotionDecision]:
    """One decision per challenger (the plan's verdicts are already adjusted across them)."""
    return {name: decide(e, config) for name, e in evidence.items()}
