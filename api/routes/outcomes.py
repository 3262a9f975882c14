"""``POST /v1/outcomes``: repayments, missed instalments and defaults into the outcomes stream, each exactly once."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, cast

from fastapi import APIRouter, Header, status

from api.deps import IngestDep, RuntimeDep, batch_limit
from api.errors import JsonBodyRoute, error_responses
from api.schemas import (
    IDEMPOTENCY_KEY_PATTERN,
    OutcomeAccepted,
    OutcomeBatchAccepted,
    OutcomeBatchRequest,
    OutcomeRequest,
)
from shadowgate.events import OUTCOME_TYPE_ALIASES, OutcomeEvent, OutcomeType, outcome_event_id, to_stream_fields

router = APIRouter(prefix="/v1", tags=["outcomes"], route_class=JsonBodyRoute)

_DESCRIPTION = """\
Report one outcome of a purchase: an instalment paid (`instalment_paid`, alias `repayment`), an instalment late
(`instalment_late`, alias `missed_instalment`) or a `default`. Outcomes are the labels every model is judged on,
so only holders of the **ingest key** (`X-Ingest-Key`) may post them; the admin key is not accepted here.

**Exactly once.** The outcome's id is derived, not drawn: from (transaction_id, event_type, instalment_number), an
alias counting as the type it stands for. Sending the same outcome again (a retry after a timeout, a replayed
batch) answers 202 with the same `event_id` and records nothing new: the event log skips an id it has already
written, and the warehouse MERGEs on it.

**Idempotency-Key.** A producer that can report two outcomes with the same triple (say, two partial payments of one
instalment) sends a key of its own per outcome: the id then derives from the key together with the triple, so two
producers' keys never collide and a retry with the same key is again a no-op. A retry must send the same key.

The first version of an outcome wins: a re-send with the same id but another amount or timestamp is dropped as a
duplicate, not answered 409 (the service keeps ids, not bodies). Correct an outcome by sending a new one with its
own `Idempotency-Key`.

**Arrival.** A label as of a date uses only the outcomes that had reached shadowgate by then: an outcome arrives
when the API receives it (`received_at`, stamped here). A replay or bulk import of history states when each outcome
was delivered in `delivered_at` (not later than its receipt, not earlier than its `event_timestamp`); a live producer
leaves it out.

202 means journaled on the service's disk before the answer; its shadow process commits it to the outcomes stream
(while Redis is down, it waits in the journal and is committed, once, when Redis returns).
"""


@router.post(
    "/outcomes",
    response_model=OutcomeAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Report a repayment, missed instalment or default",
    description=_DESCRIPTION,
    responses=error_responses(
        status.HTTP_401_UNAUTHORIZED,
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        status.HTTP_503_SERVICE_UNAVAILABLE,
        e401="No valid ingest key in `X-Ingest-Key` (always, when the service has none configured).",
        e503="The outcome log cannot take it (the journal is over its limit, or the disk refused the write): nothing "
        "was recorded; retry after `Retry-After`.",
    ),
    dependencies=[IngestDep],
)
async def record_outcome(
    body: OutcomeRequest,
    runtime: RuntimeDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="Optional: your own id for this outcome (1–128 letters, digits, `_ . : -`; a UUID fits). "
            "Send it again, unchanged, on every retry of the same outcome.",
        ),
    ] = None,
) -> OutcomeAccepted:
    received_at = dt.datetime.now(dt.UTC)
    event = _event(body, idempotency_key=idempotency_key, received_at=received_at)
    await runtime.shadow.durable(
        runtime.shadow.submit(runtime.serving.outcomes_stream, to_stream_fields(event), event.event_id)
    )
    return OutcomeAccepted(
        event_id=event.event_id,
        transaction_id=event.transaction_id,
        event_type=event.event_type,
        received_at=received_at,
    )


def _event(body: OutcomeRequest, *, idempotency_key: str | None, received_at: dt.datetime) -> OutcomeEvent:
    event_type = OUTCOME_TYPE_ALIASES.get(body.event_type, cast(OutcomeType, body.event_type))
    return OutcomeEvent(
        event_id=outcome_event_id(
            body.transaction_id, event_type, body.instalment_number, idempotency_key=idempotency_key
        ),
        transaction_id=body.transaction_id,
        event_type=event_type,
        event_timestamp=body.event_timestamp,
        instalment_number=body.instalment_number,
        amount=body.amount,
        received_at=received_at,
        delivered_at=body.delivered_at,
    )


@router.post(
    "/outcomes:batch",
    response_model=OutcomeBatchAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Report a batch of outcomes",
    description="""\
Report up to `SHADOWGATE_SERVING_MAX_BATCH` outcomes (1000 by default) in one call: a feed's bulk delivery or a
replay of history. Each is validated and recorded exactly as `POST /v1/outcomes` would (its id derived from
(transaction_id, event_type, instalment_number), or with its own `idempotency_key`).

A 422 names the invalid outcome by its index (`["body", "outcomes", i, field]`) and records none of the batch. The
batch is journaled in one write: a 503 means none of it was recorded. Re-send the whole batch; an outcome already
recorded is recorded once, whatever is sent again.
""",
    responses=error_responses(
        status.HTTP_401_UNAUTHORIZED,
        status.HTTP_413_CONTENT_TOO_LARGE,
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        status.HTTP_503_SERVICE_UNAVAILABLE,
        e401="No valid ingest key in `X-Ingest-Key` (always, when the service has none configured).",
        e413="More outcomes than `SHADOWGATE_SERVING_MAX_BATCH` (1000 by default).",
        e422="An invalid outcome (located by its index under `outcomes`), an empty list, or a body that is not JSON.",
        e503="The outcome log cannot take them (the journal is over its limit, or the disk refused the write): none "
        "was recorded; retry the whole batch after `Retry-After`.",
    ),
    dependencies=[IngestDep, batch_limit("outcomes", "outcomes")],
)
async def record_outcomes(body: OutcomeBatchRequest, runtime: RuntimeDep) -> OutcomeBatchAccepted:
    received_at = dt.datetime.now(dt.UTC)
    events = [_event(o, idempotency_key=o.idempotency_key, received_at=received_at) for o in body.outcomes]
    stream = runtime.serving.outcomes_stream
    await runtime.shadow.durable(
        runtime.shadow.submit_many([(stream, to_stream_fields(e), e.event_id) for e in events])
    )
    return OutcomeBatchAccepted(accepted=len(events), event_ids=[e.event_id for e in events])
