"""``POST /v1/bnpl/risk-assessment`` and its batch form."""

from __future__ import annotations

from typing import Any

import orjson
import pydantic
from fastapi import APIRouter, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.deps import RuntimeDep
from api.schemas import (
    AssessmentRequest,
    AssessmentResponse,
    BatchAssessmentRequest,
    BatchAssessmentResponse,
    transaction_fields,
)
from shadowgate.serving.policies import DecisionContext
from shadowgate.serving.service import Assessment

router = APIRouter(prefix="/v1/bnpl", tags=["decisions"])

_BATCH = pydantic.TypeAdapter(BatchAssessmentRequest)


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


def _context(request: Any) -> DecisionContext:
    return DecisionContext(regulatory_flags=tuple(request.regulatory_flags), is_vip=request.is_vip)


@router.post("/risk-assessment", response_model=AssessmentResponse)
async def assess(body: AssessmentRequest, runtime: RuntimeDep) -> JSONResponse:  # type: ignore[valid-type]
    """Decide one purchase: the champion (or a canary's arm) decides, every other model scores in shadow."""
    assessment = runtime.service.assess(transaction_fields(body), _context(body))
    # The body is built from a frozen dataclass of known types: skip a second pydantic pass on the hot path.
    return JSONResponse(_body(assessment))


@router.post(
    "/risk-assessment:batch",
    response_model=BatchAssessmentResponse,
    responses={413: {"description": "More transactions than SHADOWGATE_SERVING_MAX_BATCH."}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchAssessmentRequest"}}},
        }
    },
)
async def assess_batch(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """Decide up to ``max_batch`` purchases in one call (each exactly as the single endpoint would)."""
    raw = await request.body()
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": f"JSON decode error: {error}", "input": {}}]
        ) from None
    limit = runtime.serving.max_batch
    if isinstance(payload, dict) and isinstance(payload.get("transactions"), list):
        count = len(payload["transactions"])
        if count > limit:
            return JSONResponse(
                status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                content={"detail": f"batch of {count} transactions exceeds the limit of {limit}"},
            )
    try:
        batch = _BATCH.validate_python(payload)
    except pydantic.ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
        ) from None
    results = [runtime.service.assess(transaction_fields(t), _context(t)) for t in batch.transactions]
    return JSONResponse({"results": [_body(a) for a in results]})
