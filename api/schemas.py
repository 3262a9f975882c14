"""The HTTP contract. Transaction fields come from ``shadowgate.contract`` (declared once); the rest is HTTP-only."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from shadowgate.contract import FIELDS_BY_NAME, field_names, request_model

Decision = Literal["approve", "deny", "manual_review"]
RiskLevel = Literal["low", "medium", "high"]


class _DecisionInputs(BaseModel):
    regulatory_flags: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Regulatory flags raised upstream for this purchase (e.g. sanctions_hit, self_exclusion, "
        "affordability_check_required); each known flag forces deny or manual review per the active policy.",
    )
    is_vip: bool = Field(default=False, description="The customer is in the VIP programme (policy VIP handling).")


AssessmentRequest: type[BaseModel] = pydantic.create_model(
    "AssessmentRequest",
    __base__=(request_model(), _DecisionInputs),
    __doc__="One BNPL purchase to assess: the contract's transaction fields plus decision inputs.",
)


class ModelRef(BaseModel):
    alias: str | None = Field(description="Registry alias of the model that decided (None: fallback rules).")
    version: str | None = Field(description="Registered model version that decided.")


class PolicyRef(BaseModel):
    name: str
    version: int | str


class AssessmentResponse(BaseModel):
    request_id: str = Field(description="Id of this decision (the prediction id in the logs).")
    transaction_id: str
    decision: Decision
    risk_score: float | None = Field(description="Probability of default from the deciding model.")
    risk_level: RiskLevel
    reason_codes: list[str]
    model: ModelRef
    experiment_id: str | None
    arm: str | None
    propensity: float | None = Field(description="Probability with which this arm was served.")
    policy: PolicyRef
    fallback: bool = Field(description="True when no model could be used and the rule-based policy decided.")


class BatchAssessmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transactions: list[AssessmentRequest] = Field(min_length=1)  # type: ignore[valid-type]


class BatchAssessmentResponse(BaseModel):
    results: list[AssessmentResponse]


class OutcomeRequest(BaseModel):
    """A repayment, missed instalment or default reported for a purchase."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transaction_id: str = Field(pattern=FIELDS_BY_NAME["transaction_id"].pattern)
    event_type: Literal["repayment", "missed_instalment", "default", "instalment_paid", "instalment_late"]
    event_timestamp: pydantic.AwareDatetime
    instalment_number: int | None = Field(default=None, ge=1, le=24, validate_default=True)
    amount: float | None = Field(default=None, ge=0, le=1_000_000, allow_inf_nan=False)

    @pydantic.field_validator("instalment_number")
    @classmethod
    def _instalment_events_need_a_number(cls, value: int | None, info: pydantic.ValidationInfo) -> int | None:
        # A field validator (not a model one) so that the 422 names the field.
        if value is None and info.data.get("event_type", "default") != "default":
            raise ValueError("required for repayment and missed-instalment events")
        return value


class OutcomeAccepted(BaseModel):
    event_id: str
    transaction_id: str
    event_type: str
    received_at: dt.datetime


class ExperimentChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=3, max_length=500)
    actor: str = Field(default="api", min_length=1, max_length=100)


class ExperimentTransition(ExperimentChange):
    to: Literal["active", "completed", "stopped"]


class ExperimentShare(ExperimentChange):
    treatment_share: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)


_CONTRACT_NAMES = tuple(field_names())


def transaction_fields(request: BaseModel) -> dict[str, Any]:
    """The contract fields of a validated request (the decision inputs left out)."""
    return {name: getattr(request, name) for name in _CONTRACT_NAMES}
