"""Decision policies: from a default probability (or no score at all) to approve / manual review / deny.

A :class:`DecisionPolicy` is a versioned config. :func:`decide` applies it in this documented order:

1. **Risk level** from the score and the thresholds of the transaction's segment: ``score >= high`` → high,
   ``score >= medium`` → medium, else low. Per-segment overrides exist for ``new_customer``
   (``customer_tenure_days < NEW_CUSTOMER_DAYS``), ``thin_file`` (``prior_purchases < thin_file_prior_purchases``)
   and ``vip`` (from the request context); when several segments apply, the lowest (most cautious) high and medium
   thresholds among their overrides are used.
2. **Score decision**: low → approve, medium → manual_review, high → deny.
3. **Business rules**, highest precedence first. Rules only ever make a decision stricter; the final decision is the
   strictest of the score decision and every rule that fired, and each rule that fires adds its reason code:

   a. regulatory flag with action ``deny`` → deny (``REGULATORY_FLAG_<FLAG>``); flags with action ``manual_review``
      (and flags the policy does not know, which fail safe to ``unknown_regulatory_flag``) → at least manual_review;
   b. amount over the available limit (``amount > credit_limit − outstanding_balance``) → at least manual_review
      (``AMOUNT_OVER_AVAILABLE_LIMIT``);
   c. new customer above ``new_customer_manual_review_amount`` → at least manual_review (``NEW_CUSTOMER_HIGH_AMOUNT``);
   d. VIP handling: a VIP's medium risk is approved (``VIP_OVERRIDE``) when ``vip_approve_up_to_level`` is medium —
      but only when no rule above fired, so it never overrides a regulatory flag, a limit breach, a new-customer
      referral or a high risk.

4. **Drivers**: a decision other than approve gets up to ``max_driver_codes`` feature-driver codes, in this order of
   importance: ``PRIOR_DEFAULT``, ``HIGH_UTILISATION``, ``RECENT_LATE_PAYMENTS``, ``HIGH_VELOCITY_24H``,
   ``NEW_CUSTOMER``, ``THIN_FILE``.

**Fallback** (``score`` is None because no model could be loaded, or the score is not a probability): the business
rules a–c still apply, VIP handling does not (there is no score to trust), and a rule scorecard on raw fields replaces
the score decision, strictest outcome first:

* ``prior_defaults > 0`` → deny (``PRIOR_DEFAULT``);
* utilisation after the purchase ``(outstanding_balance + amount) / credit_limit > fallback.max_utilisation_after``
  → manual_review (``HIGH_UTILISATION``);
* new customer above the amount → manual_review (rule c);
* ``amount > fallback.max_approve_amount`` → manual_review (``FALLBACK_AMOUNT_ABOVE_MAX``);
* otherwise approve.

The risk level of a fallback decision follows from it (deny → high, manual_review → medium, approve → low); the
reason codes always start with ``FALLBACK_POLICY`` (then ``INVALID_SCORE`` when a score was given but unusable).

:func:`decide` is pure Python with no allocation beyond the result and a short list: it runs on every request.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib.resources.abc import Traversable
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from shadowgate.decisioning.experiments import ConfigError, config_resource, read_yaml, validate_config
from shadowgate.features import NEW_CUSTOMER_DAYS

DEFAULT_POLICY = "conservative"


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Decision(StrEnum):
    APPROVE = "approve"
    MANUAL_REVIEW = "manual_review"
    DENY = "deny"


class Segment(StrEnum):
    NEW_CUSTOMER = "new_customer"
    THIN_FILE = "thin_file"
    VIP = "vip"


# Reason codes (UPPER_SNAKE). Regulatory flags produce REGULATORY_FLAG_<FLAG>.
SCORE_HIGH_RISK = "SCORE_HIGH_RISK"
SCORE_MEDIUM_RISK = "SCORE_MEDIUM_RISK"
AMOUNT_OVER_AVAILABLE_LIMIT = "AMOUNT_OVER_AVAILABLE_LIMIT"
NEW_CUSTOMER_HIGH_AMOUNT = "NEW_CUSTOMER_HIGH_AMOUNT"
VIP_OVERRIDE = "VIP_OVERRIDE"
FALLBACK_POLICY = "FALLBACK_POLICY"
FALLBACK_AMOUNT_ABOVE_MAX = "FALLBACK_AMOUNT_ABOVE_MAX"
INVALID_SCORE = "INVALID_SCORE"
PRIOR_DEFAULT = "PRIOR_DEFAULT"
HIGH_UTILISATION = "HIGH_UTILISATION"
RECENT_LATE_PAYMENTS = "RECENT_LATE_PAYMENTS"
HIGH_VELOCITY_24H = "HIGH_VELOCITY_24H"
NEW_CUSTOMER = "NEW_CUSTOMER"
THIN_FILE = "THIN_FILE"
REGULATORY_FLAG_PREFIX = "REGULATORY_FLAG_"

_FLAG_KEY = r"^[a-z][a-z0-9_]{0,62}$"
_SLUG = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_NON_ALNUM = re.compile(r"[^a-z0-9]+")

# Severity order of decisions: rules combine by taking the strictest.
_APPROVE, _REVIEW, _DENY = 0, 1, 2
_DECISIONS = (Decision.APPROVE, Decision.MANUAL_REVIEW, Decision.DENY)
_LEVEL_OF = (RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH)
_SEVERITY = {"approve": _APPROVE, "manual_review": _REVIEW, "deny": _DENY}

Action = Literal["deny", "manual_review"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Thresholds(_Frozen):
    """Score cut-offs: ``score >= high`` → high risk, ``score >= medium`` → medium risk, else low."""

    high: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    medium: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.medium > self.high:
            raise ValueError(f"medium ({self.medium}) must be <= high ({self.high})")
        return self


class FallbackRules(_Frozen):
    """The rule scorecard used when there is no usable score."""

    max_utilisation_after: float = Field(default=0.9, gt=0.0, allow_inf_nan=False)
    """Utilisation after the purchase above this → manual_review."""
    max_approve_amount: float = Field(default=200.0, ge=0.0, allow_inf_nan=False)
    """Largest amount the fallback approves without a model."""


class Rules(_Frozen):
    """Business rules applied on top of the score."""

    new_customer_manual_review_amount: float = Field(default=500.0, ge=0.0, allow_inf_nan=False)
    """A new customer's purchase above this amount goes to manual review."""
    vip_approve_up_to_level: Literal["low", "medium"] = "medium"
    """VIPs are approved up to this risk level (``low`` disables VIP handling). Never ``high``."""
    regulatory_flags: dict[str, Action] = Field(default_factory=dict)
    """Flag (lower snake case) → the decision it forces at least."""
    unknown_regulatory_flag: Action = "manual_review"
    """What a flag missing from ``regulatory_flags`` forces: fail safe rather than ignore it."""
    thin_file_prior_purchases: int = Field(default=3, ge=0)
    """``prior_purchases`` below this is a thin file."""
    high_utilisation: float = Field(default=0.8, gt=0.0, allow_inf_nan=False)
    """Driver ``HIGH_UTILISATION`` when utilisation after the purchase exceeds this."""
    high_velocity_24h: int = Field(default=3, ge=1)
    """Driver ``HIGH_VELOCITY_24H`` when ``purchases_last_24h`` is at least this."""
    recent_late_payments: int = Field(default=1, ge=1)
    """Driver ``RECENT_LATE_PAYMENTS`` when ``prior_late_payments`` is at least this."""
    max_driver_codes: int = Field(default=3, ge=0, le=6)
    fallback: FallbackRules = Field(default_factory=FallbackRules)

    @pydantic.field_validator("regulatory_flags")
    @classmethod
    def _flag_names(cls, value: dict[str, Action]) -> dict[str, Action]:
        for key in value:
            if not re.match(_FLAG_KEY, key):
                raise ValueError(f"regulatory flag {key!r} must be lower snake case")
        return value


class DecisionPolicy(_Frozen):
    """A versioned decision policy (see the module docstring for the order rules apply in)."""

    name: str = Field(pattern=_SLUG)
    version: int = Field(ge=1)
    description: str = ""
    thresholds: Thresholds
    segment_thresholds: dict[Segment, Thresholds] = Field(default_factory=dict)
    """Overrides of ``thresholds`` per segment; the most cautious applies when several segments match."""
    rules: Rules = Field(default_factory=Rules)

    def thresholds_for(self, *, new_customer: bool, thin_file: bool, vip: bool) -> tuple[float, float]:
        """``(high, medium)`` for a transaction in these segments."""
        overrides = self.segment_thresholds
        if not overrides:
            return self.thresholds.high, self.thresholds.medium
        applicable = [
            overrides[segment]
            for segment, member in (
                (Segment.NEW_CUSTOMER, new_customer),
                (Segment.THIN_FILE, thin_file),
                (Segment.VIP, vip),
            )
            if member and segment in overrides
        ]
        if not applicable:
            return self.thresholds.high, self.thresholds.medium
        return min(t.high for t in applicable), min(t.medium for t in applicable)


@dataclass(frozen=True, slots=True)
class DecisionContext:
    """Request facts that are not part of the transaction contract.

    Attributes:
        regulatory_flags: flags raised upstream (sanctions screening, self-exclusion, ...), any case.
        is_vip: the customer is in the VIP programme.
    """

    regulatory_flags: tuple[str, ...] = ()
    is_vip: bool = False


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """The outcome of one decision, with the codes that explain it (most important first)."""

    decision: Decision
    risk_level: RiskLevel
    reason_codes: tuple[str, ...]
    policy_name: str
    policy_version: int
    fallback: bool = False


def regulatory_reason_code(flag: str) -> str:
    """``REGULATORY_FLAG_<FLAG>`` for a flag in any case (``sanctions-hit`` → ``REGULATORY_FLAG_SANCTIONS_HIT``)."""
    return REGULATORY_FLAG_PREFIX + _normalise_flag(flag).upper()


def _normalise_flag(flag: str) -> str:
    return _NON_ALNUM.sub("_", flag.strip().lower()).strip("_")


def decide(
    *, score: float | None, transaction: Mapping[str, Any], context: DecisionContext, policy: DecisionPolicy
) -> PolicyDecision:
    """Decide one transaction.

    Args:
        score: the model's probability of default, or None when no model could be loaded (→ fallback).
        transaction: contract field → value; reads ``amount``, ``credit_limit``, ``outstanding_balance``,
            ``customer_tenure_days``, ``prior_purchases``, ``prior_defaults``, ``prior_late_payments`` and
            ``purchases_last_24h``.
        context: regulatory flags and VIP status.
        policy: the policy to apply.
    """
    rules = policy.rules
    amount = transaction["amount"]
    limit = transaction["credit_limit"]
    balance = transaction["outstanding_balance"]
    new_customer = transaction["customer_tenure_days"] < NEW_CUSTOMER_DAYS
    codes: list[str] = []
    floor = _APPROVE

    # Rules a-c: they apply with and without a score.
    for flag in context.regulatory_flags:
        key = _normalise_flag(flag)
        if not key:
            continue
        action = rules.regulatory_flags.get(key, rules.unknown_regulatory_flag)
        code = REGULATORY_FLAG_PREFIX + key.upper()
        if code not in codes:
            codes.append(code)
        floor = max(floor, _SEVERITY[action])
    if amount > limit - balance:
        codes.append(AMOUNT_OVER_AVAILABLE_LIMIT)
        floor = max(floor, _REVIEW)
    if new_customer and amount > rules.new_customer_manual_review_amount:
        codes.append(NEW_CUSTOMER_HIGH_AMOUNT)
        floor = max(floor, _REVIEW)

    utilisation_after = (balance + amount) / limit if limit > 0 else math.inf
    # `not (0 <= score <= 1)` is also true for NaN.
    if score is None or not 0.0 <= score <= 1.0:
        head = [FALLBACK_POLICY] if score is None else [FALLBACK_POLICY, INVALID_SCORE]
        severity = floor
        fallback = rules.fallback
        if transaction["prior_defaults"] > 0:
            codes.append(PRIOR_DEFAULT)
            severity = _DENY
        if utilisation_after > fallback.max_utilisation_after:
            codes.append(HIGH_UTILISATION)
            severity = max(severity, _REVIEW)
        if amount > fallback.max_approve_amount:
            codes.append(FALLBACK_AMOUNT_ABOVE_MAX)
            severity = max(severity, _REVIEW)
        codes = head + codes
        if severity != _APPROVE:
            _add_drivers(
                codes, transaction, utilisation_after=utilisation_after, new_customer=new_customer, rules=rules
            )
        return PolicyDecision(
            decision=_DECISIONS[severity],
            risk_level=_LEVEL_OF[severity],
            reason_codes=tuple(codes),
            policy_name=policy.name,
            policy_version=policy.version,
            fallback=True,
        )

    thin_file = transaction["prior_purchases"] < rules.thin_file_prior_purchases
    high, medium = policy.thresholds_for(new_customer=new_customer, thin_file=thin_file, vip=context.is_vip)
    if score >= high:
        level = _DENY
        codes.append(SCORE_HIGH_RISK)
    elif score >= medium:
        level = _REVIEW
        codes.append(SCORE_MEDIUM_RISK)
    else:
        level = _APPROVE
    score_severity = level
    # Rule d: VIP relief applies to the score decision only, and only when no stricter rule fired.
    if context.is_vip and level == _REVIEW and rules.vip_approve_up_to_level == "medium" and floor == _APPROVE:
        score_severity = _APPROVE
        codes.append(VIP_OVERRIDE)
    severity = max(floor, score_severity)
    if severity != _APPROVE:
        _add_drivers(codes, transaction, utilisation_after=utilisation_after, new_customer=new_customer, rules=rules)
    return PolicyDecision(
        decision=_DECISIONS[severity],
        risk_level=_LEVEL_OF[level],
        reason_codes=tuple(codes),
        policy_name=policy.name,
        policy_version=policy.version,
        fallback=False,
    )


def _add_drivers(
    codes: list[str], transaction: Mapping[str, Any], *, utilisation_after: float, new_customer: bool, rules: Rules
) -> None:
    """Append up to ``rules.max_driver_codes`` feature-driver codes not already present, most important first."""
    candidates = (
        (PRIOR_DEFAULT, transaction["prior_defaults"] > 0),
        (HIGH_UTILISATION, utilisation_after > rules.high_utilisation),
        (RECENT_LATE_PAYMENTS, transaction["prior_late_payments"] >= rules.recent_late_payments),
        (HIGH_VELOCITY_24H, transaction["purchases_last_24h"] >= rules.high_velocity_24h),
        (NEW_CUSTOMER, new_customer),
        (THIN_FILE, transaction["prior_purchases"] < rules.thin_file_prior_purchases),
    )
    added = 0
    for code, applies in candidates:
        if added >= rules.max_driver_codes:
            break
        if applies:
            if code not in codes:
                codes.append(code)
            # A driver already named by a rule still counts toward the limit: it is the same explanation.
            added += 1


# --- loading -------------------------------------------------------------------------------------------------------


def _policy_resources() -> dict[str, Traversable]:
    folder = config_resource("policies")
    return {p.name.rsplit(".", 1)[0]: p for p in folder.iterdir() if p.name.endswith((".yaml", ".yml"))}


def shipped_policy_names() -> tuple[str, ...]:
    """Names of the policies shipped inside the package, sorted."""
    return tuple(sorted(_policy_resources()))


def load_policy(name_or_path: str | Path) -> DecisionPolicy:
    """A shipped policy by name (``conservative``, ``aggressive``) or a policy YAML file by path.

    Raises:
        ConfigError: for an unknown name, an unreadable file or an invalid field (named in the message).
    """
    text = str(name_or_path)
    source: Path | Traversable
    if isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or "/" in text:
        source = Path(name_or_path)
    else:
        shipped = _policy_resources()
        if text not in shipped:
            raise ConfigError(text, None, f"unknown policy; shipped policies: {', '.join(sorted(shipped))}")
        source = shipped[text]
    return validate_config(DecisionPolicy, read_yaml(source), source=str(source))


@dataclass(frozen=True)
class PolicyBook:
    """The policies the service can apply and which one is active.

    Args:
        policies: name → policy.
        active_name: the policy :meth:`decide` uses unless told otherwise.

    Raises:
        ConfigError: when ``active_name`` is not among ``policies`` or a key differs from its policy's name.
    """

    policies: Mapping[str, DecisionPolicy]
    active_name: str = DEFAULT_POLICY

    def __post_init__(self) -> None:
        for key, policy in self.policies.items():
            if key != policy.name:
                raise ConfigError(key, "name", f"policy registered as {key!r} is named {policy.name!r}")
        if self.active_name not in self.policies:
            raise ConfigError(
                self.active_name, None, f"active policy is not loaded; available: {', '.join(sorted(self.policies))}"
            )
        # A read-only copy so that mutating the caller's dict cannot change a book that claims to be frozen.
        object.__setattr__(self, "policies", MappingProxyType(dict(self.policies)))

    @classmethod
    def load(cls, active: str = DEFAULT_POLICY, *, extra: Sequence[str | Path] = ()) -> PolicyBook:
        """Every shipped policy plus policy files in ``extra`` (a file may replace a shipped policy of its name)."""
        policies = {name: load_policy(name) for name in shipped_policy_names()}
        for path in extra:
            policy = load_policy(Path(path))
            policies[policy.name] = policy
        return cls(policies=policies, active_name=active)

    @property
    def active(self) -> DecisionPolicy:
        return self.policies[self.active_name]

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.policies))

    def get(self, name: str) -> DecisionPolicy:
        """The policy called ``name``.

        Raises:
            KeyError: when it is not loaded.
        """
        return self.policies[name]

    def with_active(self, name: str) -> PolicyBook:
        """The same policies with ``name`` active."""
        return PolicyBook(policies=self.policies, active_name=name)

    def decide(
        self,
        *,
        score: float | None,
        transaction: Mapping[str, Any],
        context: DecisionContext,
        policy_name: str | None = None,
    ) -> PolicyDecision:
        """:func:`decide` with the active policy (or ``policy_name``)."""
        policy = self.active if policy_name is None else self.policies[policy_name]
        return decide(score=score, transaction=transaction, context=context, policy=policy)
