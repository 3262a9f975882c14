"""``POST /v1/bnpl/risk-assessment`` and its batch form."""

from __future__ import annotations

from typing import Any

import orjson
import pydantic
from fastapi import APIRouter, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from api.deps import RuntimeDep, batch_limit
from api.errors import JsonBodyRoute, error_responses
from api.schemas import (
    AssessmentRequest,
    AssessmentResponse,
    BatchAssessmentRequest,
    BatchAssessmentResponse,
    transaction_fields,
)
from shadowgate.decisioning.policies import DecisionContext
from shadowgate.serving.runtime import Runtime
from shadowgate.serving.service import Assessment

router = APIRouter(prefix="/v1/bnpl", tags=["decisions"], route_class=JsonBodyRoute)
DECISION_PATH = "/v1/bnpl/risk-assessment"


def _body(a: Assessment) -> dict[str, Any]:
    return {
        "request_id": a.request_id,
        "transaction_id": a.transaction_id,
        "decision": a.decision,
        "risk_score": a.risk_score,
        "risk_level": a.risk_level,
        "reason_codes": list(a.reason_codes),
        "model": {"alias": a.model_alias, "version": a.model_version},
        "experiment_id": a.experiment_id,
        "arm": a.arm,
        "propensity": a.propensity,
        "policy": {"name": a.policy_name, "version": a.policy_version},
        "fallback": a.fallback,
    }


async def _read_body(request: Request) -> bytes:
    """The body straight from the ASGI channel: ``Request.body()`` reads through an async generator, and registering
    one with the event loop costs ~7 µs a request here (measured with cProfile)."""
    chunks: list[bytes] = []
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _context(request: Any) -> DecisionContext:
    return DecisionContext(regulatory_flags=tuple(request.regulatory_flags), is_vip=request.is_vip)


_SINGLE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AssessmentRequest"}}},
    }
}


_SINGLE_DESCRIPTION = """\
Decide one purchase in milliseconds. The champion model (or, for a customer in an active canary, that arm's model)
scores it and the decision policy turns the score into `approve`, `deny` or `manual_review` with reason codes;
every challenger scores the same request in shadow, after the answer. Every decision is logged (prediction event)
under its `request_id`; report the purchase's repayments and defaults later under its `transaction_id`
(`POST /v1/outcomes`).

If no model can be used the rule-based fallback decides (`fallback: true`): the endpoint answers rather than fails.
"""


def _invalid(error: pydantic.ValidationError) -> RequestValidationError:
    """FastAPI's 422 for the raw-bytes validation: fields located under ``body``, a non-JSON body named as such."""
    return RequestValidationError(
        [
            {**e, "loc": ("body", *e["loc"]), **({"input": {}} if e["type"] == "json_invalid" else {})}
            for e in error.errors(include_url=False)
        ]
    )


@router.post(
    "/risk-assessment",
    response_model=AssessmentResponse,
    openapi_extra=_SINGLE_BODY,
    summary="Decide one purchase",
    description=_SINGLE_DESCRIPTION,
    responses={
        200: {
            "description": "The decision.",
            "links": {
                "RecordOutcome": {
                    "operationId": "record_outcome",
                    "requestBody": {"transaction_id": "$response.body#/transaction_id"},
                    "description": "Report this purchase's repayments and default under its `transaction_id`.",
                }
            },
        },
        **error_responses(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            status.HTTP_503_SERVICE_UNAVAILABLE,
            e422="Invalid transaction (or a body that is not JSON or not UTF-8): every failing field with its message.",
            e503="The decision log cannot take the decision (Redis has been away so long that the journal is over its "
            "limit, or the disk refused the write): nothing was decided or recorded; retry after `Retry-After`.",
        ),
    },
)
async def assess(request: Request) -> Response:
    # The hot path validates the raw bytes with pydantic-core directly (one pass, no intermediate dict, no dependency
    # resolution) and writes the answer with orjson: the same contract and the same 422s as a declared body param.
    # Bytes that are not UTF-8 are a json_invalid error of pydantic's JSON parser, so they need no check here.
    try:
        body = AssessmentRequest.model_validate_json(await _read_body(request))
    except pydantic.ValidationError as error:
        raise _invalid(error) from None
    runtime: Runtime = request.app.state.runtime
    assessment = runtime.service.assess(transaction_fields(body), _context(body))
    await runtime.shadow.durable(assessment.journaled)
    return Response(orjson.dumps(_body(assessment)), media_type="application/json")


@router.post(
    "/risk-assessment:batch",
    response_model=BatchAssessmentResponse,
    summary="Decide a batch of purchases",
    responses=error_responses(
        status.HTTP_413_CONTENT_TOO_LARGE,
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        status.HTTP_503_SERVICE_UNAVAILABLE,
        e503="The decision log cannot take the decisions (the journal is over its limit, or the disk refused the "
        "write): the batch is journaled in one write, so none of it was recorded; retry after `Retry-After`.",
        e413="More transactions than `SHADOWGATE_SERVING_MAX_BATCH` (1000 by default).",
        e422="An invalid transaction (located by its index under `transactions`), an empty list, or a body that is "
        "not JSON or not UTF-8.",
    ),
    dependencies=[batch_limit("transactions", "transactions")],
)
async def assess_batch(body: BatchAssessmentRequest, runtime: RuntimeDep) -> JSONResponse:
    """Decide up to `SHADOWGATE_SERVING_MAX_BATCH` purchases in one call, each exactly as the single endpoint would
    (same models, arms, policy and logging), answered in the request's order."""
    results = runtime.service.assess_many([(transaction_fields(t), _context(t)) for t in body.transactions])
    await runtime.shadow.durable(results[-1].journaled)
    return JSONResponse({"results": [_body(a) for a in results]})
