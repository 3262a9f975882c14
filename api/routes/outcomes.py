"""``POST /v1/outcomes``: repayments, missed instalments and defaults into the outcomes stream."""

from __future__ import annotations

import datetime as dt
from typing import cast

from fastapi import APIRouter, status

from api.deps import RuntimeDep
from api.schemas import OutcomeAccepted, OutcomeRequest
from shadowgate.events import OUTCOME_TYPE_ALIASES, OutcomeEvent, OutcomeType, outcome_event_id, to_stream_fields

router = APIRouter(prefix="/v1", tags=["outcomes"])


@router.post("/outcomes", response_model=OutcomeAccepted, status_code=status.HTTP_202_ACCEPTED)
async def record_outcome(body: OutcomeRequest, runtime: RuntimeDep) -> OutcomeAccepted:
    """Accept one outcome event; it is queued for the outcomes stream (202: logged asynchronously, never lost)."""
    received_at = dt.datetime.now(dt.UTC)
    event = OutcomeEvent(
        # Derived, not drawn: a client's retry of the same outcome keeps its id, so it is one label downstream.
        event_id=outcome_event_id(body.transaction_id, body.event_type, body.instalment_number),
        transaction_id=body.transaction_id,
        event_type=OUTCOME_TYPE_ALIASES.get(body.event_type, cast(OutcomeType, body.event_type)),
        event_timestamp=body.event_timestamp,
        instalment_number=body.instalment_number,
        amount=body.amount,
        received_at=received_at,
    )
    runtime.shadow.submit(runtime.serving.outcomes_stream, to_stream_fields(event), event.event_id)
    return OutcomeAccepted(
        event_id=event.event_id,
        transaction_id=event.transaction_id,
        event_type=event.event_type,
        received_at=received_at,
    )
