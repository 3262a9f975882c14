"""The outcome event: one repayment signal about a purchase, arriving days or weeks after the decision."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, ClassVar, Literal

import pydantic
from pydantic import AwareDatetime, Field

from shadowgate.events.base import SCHEMA_VERSION, EventId, FrozenEvent, new_event_id, utc_now

OutcomeType = Literal["instalment_paid", "instalment_late", "default"]

OUTCOME_TYPE_ALIASES: dict[str, OutcomeType] = {
    "repayment": "instalment_paid",
    "missed_instalment": "instalment_late",
}
"""Names other producers use for the simulator's outcome types; normalised on input."""


class OutcomeEvent(FrozenEvent):
    """One repayment signal about a purchase, arriving days or weeks after the decision."""

    NULL_NEEDS_VALIDATOR: ClassVar[tuple[str, ...]] = ("instalment_number",)
    """Optional fields a model validator constrains together with others: a null there is left to this model by the
    fast decoder, which checks one field at a time."""

    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    """Payload schema version (:data:`SCHEMA_VERSION` when written by this code)."""

    event_id: EventId = Field(default_factory=new_event_id)
    """Unique id of the event; use :func:`outcome_event_id` so a re-delivered signal keeps its id."""

    transaction_id: str
    """Id of the purchase the signal is about."""

    event_type: OutcomeType
    """``instalment_paid``, ``instalment_late`` or ``default`` (``repayment`` and ``missed_instalment`` accepted)."""

    event_timestamp: AwareDatetime
    """When the signal became known."""

    instalment_number: int | None = Field(default=None, ge=1)
    """Which instalment (1-based); required for instalment events, the first missed one for defaults."""

    amount: float | None = Field(default=None, ge=0.0)
    """Money concerned (instalment paid or late, or balance written off)."""

    received_at: AwareDatetime = Field(default_factory=utc_now)
    """When shadowgate received the signal (stamped at ingest by the API, never taken from the producer)."""

    # Left out of the payload when absent, so that a signal without it is written byte for byte as before (a reader
    # of the previous code refuses a key it does not know).
    delivered_at: AwareDatetime | None = Field(default=None, exclude_if=lambda value: value is None)
    """When the producer delivered the signal, as it states it: for a replay or a bulk import of history, whose
    signals were delivered long before shadowgate receives them now (``shadowgate replay`` states the simulated
    delivery). Optional: events written before it existed, and live producers, have none. The API refuses one later
    than ``received_at`` or earlier than ``event_timestamp``.

    The signal's **arrival** — when it reached the system, the instant every label as of a date filters on — is
    ``delivered_at`` when stated, else ``received_at``, and never later than ``received_at`` (the warehouse takes the
    earlier of the two: :func:`arrival`)."""

    @pydantic.field_validator("event_type", mode="before")
    @classmethod
    def _normalise_type(cls, value: Any) -> Any:
        return OUTCOME_TYPE_ALIASES.get(value, value) if isinstance(value, str) else value

    @pydantic.model_validator(mode="after")
    def _instalment_events_name_their_instalment(self) -> OutcomeEvent:
        if self.event_type != "default" and self.instalment_number is None:
            raise ValueError(f"instalment_number is required for {self.event_type} events")
        return self


def outcome_event_id(
    transaction_id: str, event_type: str, instalment_number: int | None, *, idempotency_key: str | None = None
) -> str:
    """A deterministic id for an outcome signal, so a re-delivered signal is deduplicated downstream.

    (transaction, type, instalment) is unique in the simulator's event log: an instalment is late at most once and
    paid at most once, and a purchase defaults at most once. A producer that can report two signals with the same
    triple (two partial payments of one instalment) sends an ``idempotency_key`` per signal; it is hashed together
    with the triple, so one producer's key cannot swallow another transaction's (or another type's) signal.
    Aliases (``repayment`` / ``instalment_paid``) give the same id.
    """
    normalised = OUTCOME_TYPE_ALIASES.get(event_type, event_type)
    key = f"{transaction_id}\x1f{normalised}\x1f{instalment_number if instalment_number is not None else ''}"
    if idempotency_key is not None:
        # The prefix keeps "no key" and every key apart even for a key that is the empty string.
        key += f"\x1fkey:{idempotency_key}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def arrival(event: OutcomeEvent) -> dt.datetime:
    """When ``event`` reached the system: its stated ``delivered_at``, never later than its ``received_at``.

    The warehouse applies the same rule in SQL (``queries/ground_truth_labels.sql``: ``COALESCE(LEAST(delivered_at,
    received_at), received_at)``); this is its reference, for producers and tests.
    """
    if event.delivered_at is None:
        return event.received_at
    return min(event.delivered_at, event.received_at)
