"""The HTTP contract. Transaction fields come from ``shadowgate.contract`` (declared once); the rest is HTTP-only."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from shadowgate.contract import FIELDS_BY_NAME, Timestamp, field_names, request_model
from shadowgate.events import OutcomeType

Decision = Literal["approve", "deny", "manual_review"]
RiskLevel = Literal["low", "medium", "high"]

IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
"""What an ``Idempotency-Key`` may be: 1–128 characters, letters, digits and ``_ . : -`` (a UUID fits)."""


class ErrorResponse(BaseModel):
    """An error explained in one sentence (401, 404, 409, 413, 503)."""

    detail: str = Field(description="What went wrong.", examples=["a valid X-API-Key header is required"])


class FieldError(BaseModel):
    """One failing input, located."""

    type: str = Field(
        description="Machine-readable error type (pydantic's: `missing`, `greater_than_equal`, "
        "`literal_error`, `json_invalid`, `extra_forbidden`, …).",
        examples=["greater_than_equal"],
    )
    loc: list[str | int] = Field(
        description="Where: `body` then the field path (list indices as integers), or `header` and the header name.",
        examples=[["body", "amount"]],
    )
    msg: str = Field(description="Human-readable message.", examples=["Input should be greater than or equal to 0.01"])
    input: Any = Field(default=None, description="The value that failed (for a body that is not JSON: `{}`).")
    ctx: dict[str, Any] | None = Field(default=None, description='The constraint that failed, e.g. `{"ge": 0.01}`.')


class ValidationErrorResponse(BaseModel):
    """422: the request is well-formed HTTP but its content is not valid; every failing field is listed."""

    detail: list[FieldError] = Field(description="One entry per failing field.")


class _DecisionInputs(BaseModel):
    regulatory_flags: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Regulatory flags raised upstream for this purchase (e.g. sanctions_hit, self_exclusion, "
        "affordability_check_required); each known flag forces deny or manual review per the active policy.",
    )
    is_vip: bool = Field(
        default=False, strict=True, description="The customer is in the VIP programme (policy VIP handling)."
    )


AssessmentRequest: type[BaseModel] = pydantic.create_model(
    "AssessmentRequest",
    __base__=(request_model(), _DecisionInputs),
    __doc__="One BNPL purchase to assess: the contract's transaction fields plus decision inputs.",
)


class ModelRef(BaseModel):
    alias: str | None = Field(description="Registry alias of the model that decided (null: the fallback rules).")
    version: str | None = Field(description="Registered model version that decided.")


class PolicyRef(BaseModel):
    name: str = Field(description="Decision policy that turned the score into the decision.")
    version: int | str = Field(description="Version of that policy.")


class AssessmentResponse(BaseModel):
    """The decision on one purchase, with what it was based on."""

    request_id: str = Field(description="Id of this decision (the prediction id in the logs).")
    transaction_id: str = Field(description="The purchase's id, as sent; report its outcomes under it.")
    decision: Decision = Field(description="What to tell the customer.")
    risk_score: float | None = Field(description="Probability of default from the deciding model (null: fallback).")
    risk_level: RiskLevel = Field(description="Risk band the policy put the score in.")
    reason_codes: list[str] = Field(description="Why the policy decided so (adverse-action reasons for a denial).")
    model: ModelRef
    experiment_id: str | None = Field(description="Experiment that chose the serving arm, if any.")
    arm: str | None = Field(description="Arm of that experiment this customer is in (sticky).")
    propensity: float | None = Field(description="Probability with which this arm was served.")
    policy: PolicyRef
    fallback: bool = Field(description="True when no model could be used and the rule-based policy decided.")


class BatchAssessmentRequest(BaseModel):
    """Up to ``SHADOWGATE_SERVING_MAX_BATCH`` purchases (1000 by default) decided in one call."""

    model_config = ConfigDict(extra="forbid")

    transactions: list[AssessmentRequest] = Field(  # type: ignore[valid-type]
        min_length=1, description="The purchases, each exactly as the single endpoint takes it."
    )


class BatchAssessmentResponse(BaseModel):
    results: list[AssessmentResponse] = Field(description="One decision per transaction, in the request's order.")


class OutcomeRequest(BaseModel):
    """A repayment, missed instalment or default reported for a purchase: the label the models are judged on."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "transaction_id": "tx_000001",
                    "event_type": "instalment_paid",
                    "event_timestamp": "2026-04-01T10:00:00Z",
                    "instalment_number": 2,
                    "amount": 32.5,
                }
            ]
        },
    )

    transaction_id: str = Field(
        pattern=FIELDS_BY_NAME["transaction_id"].pattern,
        description="The purchase the outcome is about (the `transaction_id` of its decision).",
        examples=["tx_000001"],
    )
    event_type: Literal["repayment", "missed_instalment", "default", "instalment_paid", "instalment_late"] = Field(
        description="`instalment_paid` (alias `repayment`), `instalment_late` (alias `missed_instalment`) or "
        "`default`. An alias is stored, and deduplicated, as the name it stands for.",
        examples=["instalment_paid"],
    )
    event_timestamp: Timestamp = Field(
        description="When the outcome became known: RFC 3339 with a time zone.", examples=["2026-04-01T10:00:00Z"]
    )
    instalment_number: int | None = Field(
        default=None,
        ge=1,
        le=24,
        strict=True,
        validate_default=True,
        description="Which instalment (1-based): required for instalment events; for a default, the first missed one "
        "(optional).",
        examples=[2],
    )
    amount: float | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        allow_inf_nan=False,
        strict=True,
        description="Money concerned: the instalment paid or late, or the balance written off.",
        examples=[32.5],
    )

    delivered_at: Timestamp | None = Field(
        default=None,
        description="Optional, for a replay or a bulk import of history only: when the outcome was delivered, as "
        "you state it (RFC 3339 with a time zone). Labels as of a date use only outcomes that had arrived by then: an "
        "outcome's arrival is this instant when given, else the instant the API received it. Not later than now (the "
        "receipt), not earlier than `event_timestamp`. A live producer leaves it out.",
        examples=["2026-04-01T10:05:00Z"],
    )

    @pydantic.field_validator("delivered_at")
    @classmethod
    def _delivered_between_known_and_received(
        cls, value: dt.datetime | None, info: pydantic.ValidationInfo
    ) -> dt.datetime | None:
        if value is None:
            return value
        # Checked against the clock before the route stamps received_at: so never later than the receipt.
        now = dt.datetime.now(dt.UTC)
        if value > now:
            raise ValueError(f"must not be later than the instant the API received the outcome ({now.isoformat()})")
        known = info.data.get("event_timestamp")
        if known is not None and value < known:
            raise ValueError("must not be earlier than event_timestamp (an outcome is delivered once it is known)")
        return value

    @pydantic.field_validator("instalment_number")
    @classmethod
    def _instalment_events_need_a_number(cls, value: int | None, info: pydantic.ValidationInfo) -> int | None:
        # A field validator (not a model one) so that the 422 names the field.
        if value is None and info.data.get("event_type", "default") != "default":
            raise ValueError("required for repayment and missed-instalment events")
        return value


class OutcomeBatchItem(OutcomeRequest):
    """One outcome of a batch: the single endpoint's body, and its own optional idempotency key."""

    idempotency_key: str | None = Field(
        default=None,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Optional: your own id for this outcome, as the single endpoint's `Idempotency-Key` header.",
    )


class OutcomeBatchRequest(BaseModel):
    """Up to ``SHADOWGATE_SERVING_MAX_BATCH`` outcomes (1000 by default) in one call: a feed's bulk delivery."""

    model_config = ConfigDict(extra="forbid")

    outcomes: list[OutcomeBatchItem] = Field(
        min_length=1, description="The outcomes, each exactly as the single endpoint takes it (plus its own key)."
    )


class OutcomeBatchAccepted(BaseModel):
    """Every outcome of the batch is recorded (or was already: then nothing new is stored)."""

    accepted: int = Field(description="Outcomes in the batch.")
    event_ids: list[str] = Field(description="Each outcome's event id, in the request's order.")


class OutcomeAccepted(BaseModel):
    """The outcome is queued for the outcomes stream (or was already recorded: then nothing new is stored)."""

    event_id: str = Field(
        description="Id of the outcome event: derived from (transaction, type, instalment) and the Idempotency-Key "
        "when one is sent, so re-sending the same outcome returns the same id and records nothing new."
    )
    transaction_id: str = Field(description="The purchase, as sent.")
    event_type: OutcomeType = Field(description="The outcome type, aliases resolved.")
    received_at: dt.datetime = Field(description="When the API received this request.")


class ExperimentChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=3, max_length=500, description="Why: kept in the experiment's audit trail.")
    actor: str = Field(default="api", min_length=1, max_length=100, description="Who made the change (audit trail).")


class ExperimentTransition(ExperimentChange):
    """Move an experiment along its lifecycle: draft → active → completed | stopped."""

    to: Literal["active", "completed", "stopped"] = Field(description="The status to move to.")


class ExperimentShare(ExperimentChange):
    """Change a canary's treatment share."""

    treatment_share: float = Field(
        ge=0.0, le=1.0, allow_inf_nan=False, strict=True, description="Share of customers served by the treatment."
    )


class RollbackRequest(BaseModel):
    """Move ``@champion`` back to the version of ``@previous`` (the champion before the last promotion)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=20,
        max_length=2000,
        description="Why, in at least 20 characters (a ticket id alone is not a reason): recorded with the move.",
    )
    actor: str = Field(default="api", min_length=1, max_length=100, description="Who rolls back (audit trail).")


_CONTRACT_NAMES = tuple(field_names())


def transaction_fields(request: BaseModel) -> dict[str, Any]:
    """The contract fields of a validated request (the decision inputs left out)."""
    return {name: getattr(request, name) for name in _CONTRACT_NAMES}
